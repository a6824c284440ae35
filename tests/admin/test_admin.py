"""The ops console (Django admin) with the test client: uploads, run pages, actions, filters, the
audit views, the contacts list and its export, permissions and CSRF."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from contacts.models import Email, Lead, Phone
from skiptrace.dialer import DIALER_HEADER
from skiptrace.intake import LeadInput
from skiptrace.models import CacheEntry, GuardState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.runs import run_create
from skiptrace.service import Policy
from skiptrace.worker import Worker

pytestmark = pytest.mark.django_db

RUNS = "/admin/skiptrace/run/"
LEADS = "/admin/contacts/lead/"
CALLS = "/admin/skiptrace/providercall/"
CACHE = "/admin/skiptrace/cacheentry/"
UPLOAD = "/admin/skiptrace/run/upload/"

GOOD_CSV = (
    "Lead ID,Owner First Name,Owner Last Name,Property Address,Property City,Property State,Property Zip\r\n"
    "A-1,Denise,Alvarez,4410 Oak Hollow Dr,Tampa,FL,33610\r\n"
    "A-2,Owen,Price,77 Bayview Ter,Baltimore,MD,21224\r\n"
    "A-3,José,Núñez,12 Palm Ave,Miami,FL,33101\r\n"
)
BAD_ROWS_CSV = (
    "LeadID,First Name,Last Name,Address,City,State,Zip\n"
    "B-1,Ann,Lee,10 Main St,Tampa,FL,33610\n"
    "B-2,Bob,Ray,,Tampa,FL,33610\n"
    "\n"
    "B-3,Cy,Day,5 Elm St,,,\n"
    "B-4,Di,Fox,9 Pine Rd,Orlando,FL,32801\n"
)
NO_STREET_CSV = "LeadID,First Name,City,State,Zip\nC-1,Ann,Tampa,FL,33610\n"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Logins here test permissions, not password strength: skip the deliberately slow hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- helpers ---------------------------------------------------------------------------------------


def lead_input(lead_id: str, n: int = 0, **fields) -> LeadInput:
    values = dict(first_name="Pat", last_name=f"Owner{n}", street=f"{100 + n} Oak St", city="Tampa", state="FL",
                  zip="33610")
    values.update(fields)
    return LeadInput(lead_id=lead_id, **values)


def make_run(n: int = 3, *, label: str = "list", prefix: str = "R") -> Run:
    return run_create(source_label=label, leads=[lead_input(f"{prefix}-{i}", i) for i in range(n)],
                      policy=Policy()).run


def work_all(run_id: str | None = None) -> None:
    worker = Worker(concurrency=1, run_id=run_id)
    while worker.process_one_batch():
        pass


def fail_items(run: Run, error: str = "provider_error: http_5xx: boom (after 1 attempts)", *,
               lead_ids: list[str] | None = None) -> None:
    items = RunItem.objects.filter(run=run)
    if lead_ids is not None:
        items = items.filter(lead_id__in=lead_ids)
    items.update(status=ItemStatus.FAILED, last_error=error)
    from skiptrace.service import runs_refresh

    runs_refresh([run.run_id], now=timezone.now())
    run.refresh_from_db()


def lead_with_contacts(lead_id: str, phones: list[dict], emails: list[dict] | None = None, *, cached: bool = False,
                       run_id: str | None = None, call: ProviderCall | None = None, **fields) -> Lead:
    """A lead whose stored contacts are these (rows written directly: the admin only reads them)."""
    lead = Lead.objects.create(
        lead_id=lead_id, address=fields.pop("address", f"{lead_id} Oak St, Tampa, FL 33610"),
        owner=fields.pop("owner", "Pat Owner"), source="batchdata", cached=cached, matched=True, run_id=run_id,
        provider_call=call, contacts_updated_at=timezone.now(), **fields,
    )
    Phone.objects.bulk_create(
        Phone(lead=lead, number=p["number"], type=p.get("type") or "Unknown", is_dnc=p.get("isDoNotCall", False),
              is_tcpa=p.get("isTcpa", False), confidence=p.get("confidence"), provider_call=call, position=n,
              dnc_checked_at=p.get("dncCheckedAt", timezone.now()))  # a fresh answer unless said otherwise
        for n, p in enumerate(phones)
    )
    Email.objects.bulk_create(
        Email(lead=lead, address=e["address"], is_primary=e.get("isPrimary", False), provider_call=call, position=n)
        for n, e in enumerate(emails or [])
    )
    return lead


def phone(number: str, type_: str = "Mobile", *, dnc: bool = False, tcpa: bool = False, confidence: int | None = 90):
    return {"number": number, "type": type_, "isDoNotCall": dnc, "isTcpa": tcpa, "confidence": confidence}


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def upload(client: Client, text: str | bytes, name: str = "leads.csv", **fields):
    """Upload, then confirm the quote (a small file is quoted and queued inside the request)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    response = client.post(UPLOAD, {"file": SimpleUploadedFile(name, data, content_type="text/csv"), **fields},
                           follow=True)
    job = (response.context or {}).get("job")
    if job is None or job.state != "quoted":
        return response  # the form, with why the file was refused
    return client.post(reverse("admin:skiptrace_run_upload_confirm", args=[job.token]), follow=True)


def csv_rows(response) -> list[list[str]]:
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def page_of(run: Run) -> str:
    """The run page (the admin quotes primary keys in its URLs: "_" becomes "_5F")."""
    return reverse("admin:skiptrace_run_change", args=[quote(run.run_id)])


def action(client: Client, url: str, name: str, pks: list, **extra):
    return client.post(url, {"action": name, "_selected_action": pks, **extra}, follow=True)


# --- permissions, routing, CSRF ------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "/admin/", RUNS, UPLOAD, LEADS, LEADS + "export/", CALLS, CACHE,
    "/admin/skiptrace/run/run_x/change/", "/admin/skiptrace/run/run_x/status/",
    "/admin/skiptrace/run/run_x/download/report.json",
])
def test_anonymous_users_are_sent_to_the_login_page(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_logged_in_user_who_is_not_staff_is_sent_to_the_login_page(client, django_user_model):
    django_user_model.objects.create_user("clerk", password="pw-123456")
    client.login(username="clerk", password="pw-123456")
    assert client.get(RUNS)["Location"].startswith("/admin/login/")


def test_staff_without_permissions_cannot_upload_view_runs_or_export(client, django_user_model):
    run = make_run(1)
    django_user_model.objects.create_user("intern", password="pw-123456", is_staff=True)
    client.login(username="intern", password="pw-123456")
    assert client.get(RUNS).status_code == 403
    assert client.get(UPLOAD).status_code == 403
    assert client.get(page_of(run)).status_code == 403
    assert client.get(f"/admin/skiptrace/run/{run.run_id}/status/").status_code == 403
    assert client.post(f"/admin/skiptrace/run/{run.run_id}/pause/").status_code == 403
    assert client.get(LEADS + "export/").status_code == 403
    assert not Run.objects.get(pk=run.pk).paused_by_operator


def test_a_viewer_sees_runs_but_gets_no_pause_or_resume(client, django_user_model):
    run = make_run(1)
    fail_items(run)
    user = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.login(username="viewer", password="pw-123456")
    page = client.get(page_of(run))
    assert page.status_code == 200
    assert b"btn-resume" not in page.content
    assert client.post(f"/admin/skiptrace/run/{run.run_id}/resume/").status_code == 403
    listing = client.get(RUNS)
    assert "resume_runs" not in listing.content.decode()


def test_admin_contacts_lands_on_the_lead_list(admin_client):
    response = admin_client.get("/admin/contacts/?has_phone=yes")
    assert response.status_code == 302
    assert response["Location"] == LEADS + "?has_phone=yes"
    assert admin_client.get("/admin/contacts/", follow=True).context["title"] == "Contacts"


def test_upload_without_a_csrf_token_is_refused_and_creates_nothing(django_user_model):
    django_user_model.objects.create_superuser("boss", password="pw-123456")
    client = Client(enforce_csrf_checks=True)
    client.login(username="boss", password="pw-123456")
    response = client.post(UPLOAD, {"file": SimpleUploadedFile("l.csv", GOOD_CSV.encode())})
    assert response.status_code == 403
    assert Run.objects.count() == 0
    run = make_run(1)
    assert client.post(RUNS, {"action": "pause_runs", "_selected_action": [run.pk]}).status_code == 403
    assert client.post(f"/admin/skiptrace/run/{run.run_id}/pause/").status_code == 403
    assert not Run.objects.get(pk=run.pk).paused_by_operator


def test_admin_css_is_served_without_debug(client, settings):
    settings.DEBUG = False  # gunicorn in production: the console must not lose its styles
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200 and b"".join(response.streaming_content)
    assert client.get("/static/../convexa/settings.py").status_code in (400, 404)  # never outside the apps


def test_run_buttons_only_take_post(admin_client):
    run = make_run(1)
    assert admin_client.get(f"/admin/skiptrace/run/{run.run_id}/pause/").status_code == 405


# --- the index ---------------------------------------------------------------------------------------


def test_index_shows_todays_spend_against_the_cap_and_the_breaker(admin_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 1000
    ProviderCall.objects.create(provider="batchdata", idempotency_key="k1", lead_id="X-1", request_json="{}",
                                state="completed", cost_cents=250, signature="s", batch_id="b",
                                budget_day=timezone.now().date())
    page = admin_client.get("/admin/").content.decode()
    assert "Spend today" in page and "$2.50" in page and "$10.00 cap" in page
    assert 'class="ops-state ops-state-closed">closed<' in page
    assert "Upload a lead list" in page
    GuardState.objects.create(name="breaker", state="open", opened_at=timezone.now(),
                              next_probe_at=timezone.now() + dt.timedelta(seconds=45))
    page = admin_client.get("/admin/").content.decode()
    assert 'ops-state-open">open<' in page and "next probe in" in page


def test_index_says_when_the_budget_is_spent(admin_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 7
    ProviderCall.objects.create(provider="batchdata", idempotency_key="k1", lead_id="X-1", request_json="{}",
                                state="completed", cost_cents=7, signature="s", batch_id="b",
                                budget_day=timezone.now().date())
    assert "Budget spent" in admin_client.get("/admin/").content.decode()


# --- upload ------------------------------------------------------------------------------------------


def test_upload_form_renders_with_the_policy_defaults(admin_client, settings):
    settings.SANITIZED_RETRY_ENABLED = True
    page = admin_client.get(UPLOAD).content.decode()
    assert 'type="file"' in page and 'name="csrfmiddlewaretoken"' in page
    assert re.search(r'name="retry_sanitized"[^>]*checked', page)


def test_add_run_goes_to_the_upload_form(admin_client):
    response = admin_client.get(RUNS + "add/")
    assert response.status_code == 302 and response["Location"] == UPLOAD


def test_upload_of_a_good_file_creates_a_queued_run_and_opens_its_page(admin_client):
    response = upload(admin_client, GOOD_CSV, force="on")
    run = Run.objects.get()
    assert response.redirect_chain[-1][0] == page_of(run)
    assert run.source_label == "leads.csv" and run.total == 3 and run.queued == 3 and run.policy_force
    assert sorted(RunItem.objects.values_list("lead_id", flat=True)) == ["A-1", "A-2", "A-3"]
    assert Lead.objects.get(lead_id="A-3").owner == "José Núñez"
    assert any("Created run" in m and "3 leads, 0 refused" in m for m in messages_of(response))
    assert ProviderCall.objects.count() == 0  # the admin never calls the provider; the worker does


def test_upload_label_overrides_the_file_name(admin_client):
    upload(admin_client, GOOD_CSV, label="September list")
    assert Run.objects.get().source_label == "September list"


def test_upload_with_bad_rows_lists_their_row_numbers_lead_ids_and_reasons(admin_client):
    response = upload(admin_client, BAD_ROWS_CSV)
    run = Run.objects.get()
    assert (run.total, run.failed, run.queued) == (4, 2, 2)
    shown = messages_of(response)
    assert any("4 leads, 2 refused at intake" in m for m in shown)
    refused = [m for m in shown if m.startswith("Row ")]
    assert len(refused) == 2
    assert refused[0].startswith("Row 2 (lead B-2): invalid_input:")
    assert refused[1].startswith("Row 4 (lead B-3): invalid_input:")  # the blank line still counts as a row
    page = response.content.decode()
    assert "invalid_input" in page and "B-2" in page  # errors by reason and failed items on the run page


def test_upload_without_a_street_column_shows_why_and_creates_nothing(admin_client):
    response = upload(admin_client, NO_STREET_CSV)
    assert response.status_code == 200
    assert response.redirect_chain == []
    errors = response.context["form"].errors["file"][0]
    assert "street" in errors and "nothing was created" in errors
    assert Run.objects.count() == 0 and RunItem.objects.count() == 0 and Lead.objects.count() == 0


def test_upload_of_an_empty_or_binary_file_is_refused(admin_client):
    assert "empty" in str(upload(admin_client, b"").context["form"].errors)
    assert "no data rows" in str(upload(admin_client, "LeadID,Address,Zip\r\n\r\n").context["form"].errors)
    assert upload(admin_client, b"PK\x03\x04" + bytes(200), name="leads.xlsx").context["form"].errors
    assert Run.objects.count() == 0


def test_upload_while_the_budget_is_spent_creates_the_run_and_warns(admin_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    response = upload(admin_client, GOOD_CSV)
    assert Run.objects.count() == 1
    assert any("budget is spent" in m for m in messages_of(response))


# --- runs changelist, filters, actions ---------------------------------------------------------------


def test_runs_changelist_shows_state_progress_ratio_and_spend(admin_client):
    run = make_run(4)
    RunItem.objects.filter(run=run, lead_id="R-0").update(status="done", cached=True)
    RunItem.objects.filter(run=run, lead_id="R-1").update(status="failed", last_error="invalid_input: x")
    Run.objects.filter(pk=run.pk).update(done=1, failed=1, queued=2, cache_hits=1, provider_served=3,
                                         cost_cents=1234, started_at=timezone.now())
    page = admin_client.get(RUNS).content.decode()
    assert run.run_id in page and "list" in page
    assert ">running<" in page
    assert "1 done · 1 failed · 2 queued of 4" in page
    assert "25%" in page and "$12.34" in page
    assert "1 refused at intake" in page


def test_runs_changelist_makes_the_same_queries_for_30_runs_as_for_3(admin_client):
    for n in range(3):
        make_run(2, prefix=f"a{n}")
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(RUNS).status_code == 200
    for n in range(27):
        make_run(2, prefix=f"b{n}")
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(RUNS)
    assert response.context["cl"].result_count == 30
    assert len(many) == len(few) <= 12


@pytest.mark.parametrize("state", ["queued", "running", "paused", "finished"])
def test_state_filter_finds_runs_in_that_state(admin_client, state):
    runs = {s: make_run(1, label=s, prefix=s) for s in ("queued", "running", "paused", "finished")}
    Run.objects.filter(pk=runs["running"].pk).update(started_at=timezone.now())
    Run.objects.filter(pk=runs["paused"].pk).update(soft_paused=True, reason="daily_budget")
    fail_items(runs["finished"])
    found = [r.run_id for r in admin_client.get(RUNS, {"state": state}).context["cl"].result_list]
    assert found == [runs[state].run_id]
    assert {r.state for r in Run.objects.filter(run_id__in=found)} == {state}


def test_pause_action_pauses_only_unfinished_runs(admin_client):
    working, finished = make_run(2, prefix="w"), make_run(1, prefix="f")
    fail_items(finished)
    response = action(admin_client, RUNS, "pause_runs", [working.pk, finished.pk])
    assert "Paused 1 run. 1 run skipped: finished or already paused." in messages_of(response)
    assert Run.objects.get(pk=working.pk).state == "paused"
    assert Run.objects.get(pk=finished.pk).state == "finished"


def test_resume_action_requeues_failed_items_but_not_invalid_input(admin_client):
    one, two, idle = make_run(2, prefix="o"), make_run(1, prefix="t"), make_run(1, prefix="i")
    fail_items(one)
    fail_items(two)
    RunItem.objects.filter(run=two).update(last_error="invalid_input: missing street")
    response = action(admin_client, RUNS, "resume_runs", [one.pk, two.pk, idle.pk])
    assert "Resumed 1 run (2 items requeued). 2 runs skipped: nothing to requeue and not paused." in messages_of(response)
    assert set(RunItem.objects.filter(run=one).values_list("status", flat=True)) == {"queued"}
    assert set(RunItem.objects.filter(run=two).values_list("status", flat=True)) == {"failed"}
    one.refresh_from_db()
    assert one.finished_at is None and one.queued == 2 and one.failed == 0


def test_resume_action_says_resumed_n_runs(admin_client):
    runs = [make_run(1, prefix=f"p{n}") for n in range(3)]
    for run in runs:
        fail_items(run)
    response = action(admin_client, RUNS, "resume_runs", [r.pk for r in runs])
    assert messages_of(response) == ["Resumed 3 runs (3 items requeued)."]


def test_resume_unpauses_an_operator_paused_run(admin_client):
    run = make_run(2)
    action(admin_client, RUNS, "pause_runs", [run.pk])
    response = action(admin_client, RUNS, "resume_runs", [run.pk])
    assert messages_of(response)[0].startswith("Resumed 1 run")
    assert Run.objects.get(pk=run.pk).state == "queued"


def test_resume_while_the_budget_is_spent_needs_the_override(admin_client, settings):
    run = make_run(2)
    fail_items(run)
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    response = action(admin_client, RUNS, "resume_runs", [run.pk])
    assert "Resumed 0 runs" in messages_of(response)[0] and "budget is spent" in messages_of(response)[0]
    assert Run.objects.get(pk=run.pk).failed == 2
    response = action(admin_client, RUNS, "resume_runs_override_budget", [run.pk], confirm="yes")
    assert messages_of(response) == ["Resumed 1 run past today's budget (2 items requeued)."]
    run.refresh_from_db()
    assert run.override_budget and run.queued == 2


def test_override_resumes_a_run_paused_for_the_budget(admin_client):
    run = make_run(2)
    Run.objects.filter(pk=run.pk).update(soft_paused=True, reason="daily_budget", started_at=timezone.now())
    response = action(admin_client, RUNS, "resume_runs_override_budget", [run.pk], confirm="yes")
    assert messages_of(response)[0].startswith("Resumed 1 run past today's budget")
    run.refresh_from_db()
    assert run.state == "running" and run.override_budget and not run.soft_paused


# --- the run page, its status JSON, buttons and downloads --------------------------------------------


def test_run_page_refreshes_itself_while_the_run_works(admin_client):
    run = make_run(3)
    page = admin_client.get(page_of(run)).content.decode()
    assert f'data-status-url="/admin/skiptrace/run/{run.run_id}/status/"' in page
    assert "fetch(url" in page and '<meta http-equiv="refresh" content="2">' in page
    assert "<script src=\"http" not in page  # no external script
    assert 'data-field="queued">3<' in page
    assert "written when the run finishes" in page


def test_status_json_follows_the_run(admin_client):
    run = make_run(4)
    fail_items(run)
    data = admin_client.get(f"/admin/skiptrace/run/{run.run_id}/status/").json()
    assert data["state"] == "finished" and data["failed"] == 4 and data["total"] == 4
    assert data["progress"]["pct"]["failed"] == 100.0


def test_finished_run_page_stops_refreshing_and_offers_both_downloads(admin_client, sandbox):
    run = make_run(3)
    work_all(run.run_id)
    run.refresh_from_db()
    assert run.state == "finished"
    page = admin_client.get(page_of(run)).content.decode()
    assert "fetch(url" not in page and "http-equiv" not in page
    assert f'href="/admin/skiptrace/run/{run.run_id}/download/report.json"' in page
    report = admin_client.get(f"/admin/skiptrace/run/{run.run_id}/download/report.json")
    assert report.status_code == 200 and "attachment" in report["Content-Disposition"]
    assert json.loads(b"".join(report.streaming_content))["run_id"] == run.run_id
    enriched = admin_client.get(f"/admin/skiptrace/run/{run.run_id}/download/enriched.csv")
    rows = csv_rows(enriched)
    assert rows[0] == DIALER_HEADER and len(rows) == 4


def test_downloads_before_the_run_finishes_are_404(admin_client):
    run = make_run(1)
    assert admin_client.get(f"/admin/skiptrace/run/{run.run_id}/download/report.json").status_code == 404
    assert admin_client.get(f"/admin/skiptrace/run/{run.run_id}/download/other.txt").status_code == 404


def test_a_finished_run_without_files_gets_them_written_on_download(admin_client):
    run = make_run(2)
    fail_items(run)
    from skiptrace.reports import artifact_paths

    for p in artifact_paths(run.run_id):
        p.unlink(missing_ok=True)
    rows = csv_rows(admin_client.get(f"/admin/skiptrace/run/{run.run_id}/download/enriched.csv"))
    assert [r[0] for r in rows[1:]] == ["R-0", "R-1"]


def test_run_page_shows_errors_by_reason_and_failed_items_with_links(admin_client):
    run = make_run(3)
    RunItem.objects.filter(run=run, lead_id="R-2").update(status="failed", last_error="invalid_input: missing street")
    fail_items(run, lead_ids=["R-0", "R-1"])
    page = admin_client.get(page_of(run)).content.decode()
    errors = page[page.index('id="errors"'):page.index('id="failed-items"')]
    assert "provider_error" in errors and "invalid_input" in errors
    assert 'href="/admin/contacts/lead/R-0/change/"' in page
    assert "btn-resume" in page and "btn-pause" not in page


def test_run_page_buttons_pause_and_resume(admin_client):
    run = make_run(2)
    response = admin_client.post(f"/admin/skiptrace/run/{run.run_id}/pause/", follow=True)
    assert messages_of(response)[0].startswith("Paused 1 run")
    assert Run.objects.get(pk=run.pk).paused_by_operator
    response = admin_client.post(f"/admin/skiptrace/run/{run.run_id}/resume/", follow=True)
    assert messages_of(response)[0].startswith("Resumed 1 run")
    assert not Run.objects.get(pk=run.pk).paused_by_operator
    response = admin_client.post(f"/admin/skiptrace/run/{run.run_id}/resume-override/", follow=True)
    assert messages_of(response)[0].startswith("Nothing to resume")


def test_unknown_run_is_404(admin_client):
    assert admin_client.get("/admin/skiptrace/run/run_nope/change/").status_code == 404
    assert admin_client.get("/admin/skiptrace/run/run_nope/status/").status_code == 404


def test_runs_cannot_be_deleted_from_the_console(admin_client):
    run = make_run(1)
    assert admin_client.get(f"/admin/skiptrace/run/{run.run_id}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get(RUNS).content.decode()


# --- audit views ---------------------------------------------------------------------------------------


@pytest.fixture
def traced(sandbox):
    """A finished run worked against the sandbox: calls, cache entries, leads with contacts."""
    run = make_run(6, label="traced")
    work_all(run.run_id)
    run.refresh_from_db()
    return run


def test_provider_calls_are_listed_read_only_with_run_lead_cost_and_state(admin_client, traced):
    page = admin_client.get(CALLS).content.decode()
    call = ProviderCall.objects.filter(run_id=traced.run_id).first()
    assert f'href="{page_of(traced)}"' in page
    assert f'href="/admin/contacts/lead/{call.lead_id}/change/"' in page
    assert ">completed<" in page and "$0.07" in page
    assert f'href="{CALLS}add/"' not in page and "delete_selected" not in page
    assert admin_client.get(CALLS + "add/").status_code == 403


def test_provider_call_page_shows_sanitized_pretty_json_without_full_phones_or_emails(admin_client, traced):
    call = ProviderCall.objects.filter(run_id=traced.run_id, matched=True).first()
    contacts = json.loads(call.parsed_contacts_json)
    assert contacts["phones"] and contacts["emails"]
    page = admin_client.get(f"{CALLS}{call.pk}/change/").content.decode()
    assert "Sanitized request and response" in page and '<pre class="ops-json"' in page
    for p in contacts["phones"]:
        digits = p["number"][2:]
        assert digits not in page and p["number"] not in page
    for e in contacts["emails"]:
        assert e["address"] not in page
    assert "***" in page
    assert '<input type="submit"' not in page or 'name="_save"' not in page  # read-only


def test_provider_calls_filter_by_state_and_run(admin_client, traced):
    other = make_run(1, prefix="O")
    ProviderCall.objects.create(provider="batchdata", idempotency_key="lost1", lead_id="O-0", run_id=other.run_id,
                                request_json="{}", state="lost", signature="s", batch_id="b",
                                budget_day=timezone.now().date())
    lost = admin_client.get(CALLS, {"state": "lost"}).context["cl"].result_list
    assert [c.lead_id for c in lost] == ["O-0"]
    of_run = admin_client.get(CALLS, {"run_id": traced.run_id}).context["cl"]
    assert of_run.result_count == ProviderCall.objects.filter(run_id=traced.run_id).count() > 0


def test_provider_calls_changelist_makes_the_same_queries_for_30_rows_as_for_3(admin_client):
    def calls(n: int, start: int) -> None:
        for i in range(start, start + n):
            ProviderCall.objects.create(provider="batchdata", idempotency_key=f"k{i}", lead_id=f"L-{i}",
                                        run_id="run_x", request_json="{}", state="completed", signature=f"s{i}",
                                        batch_id=f"b{i}", budget_day=timezone.now().date())

    calls(3, 0)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(CALLS)
    calls(27, 3)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(CALLS).context["cl"].result_count == 30
    assert len(many) == len(few)


def test_cache_entries_are_read_only_and_filter_by_freshness(admin_client, traced):
    entries = CacheEntry.objects.count()
    assert entries > 0
    CacheEntry.objects.filter(pk=CacheEntry.objects.first().pk).update(
        ttl_expires_at=timezone.now() - dt.timedelta(days=1))
    assert admin_client.get(CACHE, {"fresh": "no"}).context["cl"].result_count == 1
    assert admin_client.get(CACHE, {"fresh": "yes"}).context["cl"].result_count == entries - 1
    page = admin_client.get(CACHE).content.decode()
    assert f'href="{page_of(traced)}"' in page and ">expired<" in page
    assert admin_client.get(CACHE + "add/").status_code == 403


def test_cache_entry_page_is_sanitized(admin_client, traced):
    entry = CacheEntry.objects.exclude(parsed_contacts_json__contains='"phones": []').first()
    contacts = json.loads(entry.parsed_contacts_json)
    page = admin_client.get(f"{CACHE}{entry.pk}/change/").content.decode()
    assert '<pre class="ops-json"' in page
    for p in contacts["phones"]:
        assert p["number"][2:] not in page
    for e in contacts["emails"]:
        assert e["address"] not in page


def test_cache_changelist_makes_the_same_queries_for_30_rows_as_for_3(admin_client, sandbox):
    make_run(3, prefix="c")
    work_all()
    with CaptureQueriesContext(connection) as few:
        admin_client.get(CACHE)
    make_run(30, prefix="d")  # 27 new signatures (the first three are cached)
    work_all()
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(CACHE).context["cl"].result_count == 30
    assert len(many) == len(few)


# --- contacts -----------------------------------------------------------------------------------------


@pytest.fixture
def contacts_data():
    run = make_run(1, label="September list", prefix="S")
    callable_ = lead_with_contacts(
        "L-1", [phone("+18135550101", "Landline", confidence=95), phone("+18135550102", dnc=True),
                phone("+18135550103", "Mobile", confidence=60), phone("+18135550104", tcpa=True)],
        [{"address": "owner1@example.com", "isPrimary": True}], owner="Denise Alvarez", street="4410 Oak Hollow Dr",
        address="4410 Oak Hollow Dr, Tampa, FL 33610", run_id=run.run_id)
    dnc_only = lead_with_contacts("L-2", [phone("+18135550201", dnc=True)], cached=True, owner="Owen Price",
                                  street="77 Bayview Ter", address="77 Bayview Ter, Baltimore, MD 21224")
    Lead.objects.create(lead_id="L-3", owner="Never Traced", street="1 Nowhere Rd", address="1 Nowhere Rd")
    RunItem.objects.create(run=run, lead_id="L-1", idem_key="x", status="done")
    return {"run": run, "callable": callable_, "dnc_only": dnc_only}


def result_ids(response) -> list[str]:
    return [lead.lead_id for lead in response.context["cl"].result_list]


def test_contacts_list_shows_callable_phones_mobile_first_and_emails(admin_client, contacts_data):
    response = admin_client.get(LEADS)
    page = response.content.decode()
    assert response.context["title"] == "Contacts"
    for header in ("LeadID", "Address", "Owner", "Phone1", "Phone2", "Phone3", "Email1", "Email2", "Email3",
                   "UpdatedAt", "Cached"):
        assert f">{header}<" in page
    assert page.index("(813) 555-0103") < page.index("(813) 555-0101")  # mobile first
    assert "555-0102" not in page and "555-0104" not in page and "555-0201" not in page  # DNC / TCPA never shown
    assert "owner1@example.com" in page
    assert ">cached<" in page and ">fresh<" in page and ">not traced<" in page


def test_filters_show_counts_on_request(admin_client, contacts_data):
    page = admin_client.get(LEADS, {"_facets": "True"}).content.decode()
    assert "Yes (callable) (1)" in page and "Only DNC/TCPA numbers (1)" in page
    assert admin_client.get(RUNS, {"_facets": "True"}).status_code == 200
    assert admin_client.get(CALLS, {"_facets": "True"}).status_code == 200


def test_has_phone_filter(admin_client, contacts_data):
    assert result_ids(admin_client.get(LEADS, {"has_phone": "yes"})) == ["L-1"]
    assert result_ids(admin_client.get(LEADS, {"has_phone": "dnc_only"})) == ["L-2"]
    assert result_ids(admin_client.get(LEADS, {"has_phone": "no"})) == ["L-3", "S-0"]


def test_has_email_filter(admin_client, contacts_data):
    assert result_ids(admin_client.get(LEADS, {"has_email": "yes"})) == ["L-1"]
    assert result_ids(admin_client.get(LEADS, {"has_email": "no"})) == ["L-2", "L-3", "S-0"]


def test_updated_since_filter(admin_client, contacts_data):
    Lead.objects.filter(lead_id="L-2").update(contacts_updated_at=timezone.now() - dt.timedelta(days=10))
    assert result_ids(admin_client.get(LEADS, {"updated_since": "1d"})) == ["L-1"]
    assert result_ids(admin_client.get(LEADS, {"updated_since": "30d"})) == ["L-1", "L-2"]
    assert result_ids(admin_client.get(LEADS, {"updated_since": "never"})) == ["L-3", "S-0"]


def test_source_filter_finds_the_leads_of_an_uploaded_list(admin_client, contacts_data):
    response = admin_client.get(LEADS, {"source": "September list"})
    assert result_ids(response) == ["L-1", "S-0"]
    assert "September list" in response.content.decode()  # offered in the sidebar
    assert result_ids(admin_client.get(LEADS, {"run": contacts_data["run"].run_id})) == ["L-1", "S-0"]


def test_cached_only_filter(admin_client, contacts_data):
    assert result_ids(admin_client.get(LEADS, {"cached": "yes"})) == ["L-2"]
    assert result_ids(admin_client.get(LEADS, {"cached": "no"})) == ["L-1"]


@pytest.mark.parametrize(("query", "expected"), [("L-2", ["L-2"]), ("alvarez", ["L-1"]), ("Bayview", ["L-2"])])
def test_search_by_lead_id_name_and_street(admin_client, contacts_data, query, expected):
    assert result_ids(admin_client.get(LEADS, {"q": query})) == expected


def test_contacts_changelist_makes_the_same_queries_for_30_leads_as_for_3(admin_client):
    def leads(start: int, n: int) -> None:
        for i in range(start, start + n):
            lead_with_contacts(f"Q-{i:02d}", [phone(f"+1813555{i:04d}"), phone(f"+1727555{i:04d}", dnc=True)],
                               [{"address": f"q{i}@example.com"}])

    leads(0, 3)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LEADS)
    leads(3, 27)
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LEADS)
    assert response.context["cl"].result_count == 30
    assert "(813) 555-0029" in response.content.decode()
    assert len(many) == len(few) <= 14


def test_lead_page_shows_phones_and_emails_with_provenance(admin_client, traced):
    item = RunItem.objects.filter(run=traced, status="done", provider_call__matched=True).first()
    lead = Lead.objects.get(lead_id=item.lead_id)
    page = admin_client.get(f"{LEADS}{lead.lead_id}/change/").content.decode()
    assert "phones (provider order)" in page.lower() and "emails (provider order)" in page.lower()
    first = lead.phones.first()
    assert f"({first.number[2:5]}) {first.number[5:8]}-{first.number[8:]}" in page
    assert first.type in page
    assert f'href="/admin/skiptrace/providercall/{item.provider_call_id}/change/"' in page
    assert f'href="{page_of(traced)}"' in page
    assert lead.emails.first().address in page
    assert 'name="_save"' not in page  # contacts change only through a run


def test_lead_page_marks_dnc_and_tcpa_numbers_excluded(admin_client, contacts_data):
    page = admin_client.get(f"{LEADS}L-1/change/").content.decode()
    assert page.count(">excluded<") == 2 and page.count(">callable<") == 2
    assert "DNC/TCPA excluded: 2" in page


# --- export -------------------------------------------------------------------------------------------


def test_export_action_streams_the_dialer_csv_of_the_selected_leads(admin_client, contacts_data):
    response = admin_client.post(LEADS, {"action": "export_dialer_csv", "_selected_action": ["L-1", "L-2"]})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="contacts-')
    rows = csv_rows(response)
    assert rows[0] == DIALER_HEADER
    assert rows[1] == ["L-1", "4410 Oak Hollow Dr, Tampa, FL 33610", "Denise Alvarez", "8135550103", "8135550101",
                       "", "owner1@example.com", "", "", "batchdata", "batchdata", "no", "2", "0"]
    assert rows[2][0] == "L-2" and rows[2][3:6] == ["", "", ""] and rows[2][-3:] == ["yes", "1", "0"]


def test_export_all_matching_follows_the_filters_and_search(admin_client, contacts_data):
    page = admin_client.get(LEADS, {"has_phone": "yes"}).content.decode()
    assert 'href="/admin/contacts/lead/export/?has_phone=yes"' in page and "Export all 1 matching" in page
    rows = csv_rows(admin_client.get(LEADS + "export/", {"has_phone": "yes"}))
    assert [r[0] for r in rows] == ["LeadID", "L-1"]
    rows = csv_rows(admin_client.get(LEADS + "export/"))
    assert [r[0] for r in rows[1:]] == ["L-1", "L-2", "L-3", "S-0"]
    rows = csv_rows(admin_client.get(LEADS + "export/", {"q": "bayview"}))
    assert [r[0] for r in rows[1:]] == ["L-2"]


def test_export_with_bad_filters_redirects_with_a_message(admin_client, contacts_data):
    response = admin_client.get(LEADS + "export/", {"nonsense__field": "1"}, follow=True)
    assert any("not valid" in m for m in messages_of(response))


def test_export_queries_do_not_grow_with_the_number_of_leads(admin_client):
    for i in range(40):
        lead_with_contacts(f"E-{i:02d}", [phone(f"+1813555{i:04d}")], [{"address": f"e{i}@example.com"}])
    with CaptureQueriesContext(connection) as queries:
        rows = csv_rows(admin_client.get(LEADS + "export/"))
    assert len(rows) == 41
    assert len(queries) <= 12


def test_leads_cannot_be_added_or_edited_in_the_console(admin_client, contacts_data):
    assert admin_client.get(LEADS + "add/").status_code == 403
    before = Phone.objects.count(), Email.objects.count()
    admin_client.post(f"{LEADS}L-1/change/", {"owner": "Changed"})
    assert Lead.objects.get(lead_id="L-1").owner == "Denise Alvarez"
    assert (Phone.objects.count(), Email.objects.count()) == before
