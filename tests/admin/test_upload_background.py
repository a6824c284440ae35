"""The console upload as a background job (issue 16 items 1 and 2): upload → quote → confirm →
the run is queued by a thread in chunks → the run page. Nothing exists before the confirmation but
the stored file (owner-only, deleted afterwards); other requests never see a 5xx meanwhile."""

from __future__ import annotations

import csv
import datetime as dt
import importlib.util
import io
import json
import re
import stat
import sys
import threading
import time
from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone

from contacts.models import Lead
from skiptrace import uploads
from skiptrace.models import CacheEntry, ItemStatus, Run, RunItem
from skiptrace.money import items_claim
from skiptrace.money.cache import cache_key
from skiptrace.normalize import normalize_lead
from skiptrace.provider import PROVIDER
from skiptrace.upload_models import UploadJob, UploadState
from tests.conftest import ApiClient

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("convexa_bench_leads", ROOT / "scripts" / "bench_leads.py")
bench_leads = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_leads)  # the benchmarks' lead generator (scripts/ is not a package)

pytestmark = pytest.mark.django_db(transaction=True)  # the job runs in its own thread and connection

UPLOAD = "/admin/skiptrace/run/upload/"
HEADER = "Lead ID,Owner First Name,Owner Last Name,Property Address,Property City,Property State,Property Zip\r\n"
QUOTE_CSV = (
    HEADER
    + "Q-1,Denise,Alvarez,4410 Oak Hollow Dr,Tampa,FL,33610\r\n"
    + "Q-2,Owen,Price,77 Bayview Ter,Baltimore,MD,21224\r\n"
    + "Q-3,Denise,Alvarez,4410 Oak Hollow Drive,Tampa,FL,33610\r\n"  # the same input as Q-1
    + "Q-4,Cy,Day,,Tampa,FL,33610\r\n"  # no street: refused
    + "Q-5,José,Núñez,12 Palm Ave,Miami,FL,33101\r\n"  # answered before: cached
)
urlpatterns: list = []  # filled by ``wired`` when RunAdmin does not route the upload job yet


@pytest.fixture(autouse=True)
def _setup(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "INLINE_MAX_BYTES", 0)  # every file goes to a thread (see the inline test)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    yield
    assert uploads.jobs_wait(60), "an upload job thread is still running"


@pytest.fixture(autouse=True)
def wired(settings, monkeypatch):
    """Route the upload views as ``RunAdmin.get_urls`` will (``*upload_urls(self)`` first), unless
    it already does."""
    try:
        reverse("admin:skiptrace_run_upload_status", args=["x"])
        return
    except NoReverseMatch:
        pass
    import convexa.urls as base
    from skiptrace.admin import RunAdmin

    original = RunAdmin.get_urls
    monkeypatch.setattr(RunAdmin, "get_urls", lambda self: [*uploads.upload_urls(self), *original(self)])
    patterns = [p for p in base.urlpatterns if getattr(p, "app_name", None) != "admin"]
    at = next(i for i, p in enumerate(base.urlpatterns) if getattr(p, "app_name", None) == "admin")
    patterns.insert(at, path("admin/", admin.site.urls))
    monkeypatch.setattr(sys.modules[__name__], "urlpatterns", patterns)
    settings.ROOT_URLCONF = __name__


def upload(client: Client, text: str | bytes, name: str = "leads.csv", **fields):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return client.post(UPLOAD, {"file": SimpleUploadedFile(name, data, content_type="text/csv"), "label": "",
                                **fields})


def job_of(response) -> UploadJob:
    assert response.status_code == 302, getattr(response, "content", b"")[:2000]
    token = response["Location"].rstrip("/").split("/")[-1]
    return UploadJob.objects.get(token=token)


def wait_state(job: UploadJob, *states: str, timeout: float = 60.0) -> UploadJob:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.state in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job stayed {job.state} ({job.error})")


def seed_cache(**lead) -> None:
    sig = normalize_lead(**lead).signature
    now = timezone.now()
    CacheEntry.objects.create(provider=PROVIDER, idempotency_key=cache_key(sig), payload_hash="h" * 64,
                              response_json="{}", parsed_contacts_json=json.dumps({"matched": True, "phones": []}),
                              ttl_expires_at=now + dt.timedelta(days=30), signature=sig)


def stored_files(settings) -> list[Path]:
    folder = Path(settings.DATA_DIR) / "uploads"
    return list(folder.iterdir()) if folder.exists() else []


def user_with(django_user_model, name: str, *codenames: str):
    user = django_user_model.objects.create_user(name, password="pw-123456", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename, content_type__app_label="skiptrace"))
    return user


# --- the quote, the confirmation, the run -----------------------------------------------------------


def test_upload_shows_the_quote_creates_nothing_until_confirmed_then_queues_the_run(admin_client, settings):
    seed_cache(first_name="José", last_name="Núñez", street="12 Palm Ave", city="Miami", state="FL", zip="33101")
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 500
    started = time.monotonic()
    job = job_of(upload(admin_client, QUOTE_CSV, name="september.csv"))
    assert time.monotonic() - started < 5
    page = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token]))
    assert page.status_code == 200
    job = wait_state(job, UploadState.QUOTED)
    # the stored file is owner-only while it waits
    (stored,) = stored_files(settings)
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700

    page = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token]))
    text = page.content.decode()
    assert page.context["quote"] == {"rows": 5, "invalid": 1, "duplicates": 1, "cached": 1, "billable": 2,
                     "worst_case_usd": 0.14, "budget_left_usd": 5.0}
    assert 'data-q="worst_case_usd">$0.14<' in text and 'data-q="budget_left_usd">$5.00<' in text
    assert 'data-q="cached">1<' in text and 'data-q="duplicates">1<' in text
    assert page.context["refused"] == [{"row": 4, "lead_id": "Q-4", "reason": page.context["refused"][0]["reason"]}]
    assert "street" in page.context["refused"][0]["reason"]
    assert "Confirm and queue 5 rows" in text
    assert not Run.objects.exists() and not Lead.objects.exists()  # a quote creates nothing

    started = time.monotonic()
    confirmed = admin_client.post(reverse("admin:skiptrace_run_upload_confirm", args=[job.token]))
    assert confirmed.status_code == 302 and time.monotonic() - started < 5
    job = wait_state(job, UploadState.DONE)
    status = admin_client.get(reverse("admin:skiptrace_run_upload_status", args=[job.token])).json()
    assert status["state"] == "done" and status["rows_done"] == 5 and status["percent"] == 100.0
    assert status["run_url"] == reverse("admin:skiptrace_run_change", args=[quote(job.run_id)])

    # the progress page goes to the run page, saying what was created
    landing = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token]), follow=True)
    assert landing.redirect_chain[-1][0] == status["run_url"]
    shown = [str(m) for m in landing.context["messages"]]
    assert any(f"Created run {job.run_id}" in m and "5 leads" in m and "1 refused" in m for m in shown)
    assert any(m.startswith("Row 4 (lead Q-4): invalid_input:") for m in shown)

    run = Run.objects.get(run_id=job.run_id)
    assert run.source_label == "september.csv" and (run.total, run.queued, run.failed) == (5, 4, 1)
    items = list(RunItem.objects.filter(run=run).order_by("position").values_list("lead_id", "status", "not_before"))
    assert [i[0] for i in items] == ["Q-1", "Q-2", "Q-3", "Q-4", "Q-5"]
    assert [i[1] for i in items] == ["queued", "queued", "queued", "failed", "queued"]
    assert all(i[2] is None for i in items)  # released to the workers
    assert stored_files(settings) == []  # the personal data file is gone
    if hasattr(run, "created_by_id"):  # who created it (issue 16 item 5), where Run records it
        assert run.created_by_id == job.created_by_id and run.created_via == "console"
    from skiptrace import models

    if hasattr(models, "AuditEvent"):
        (event,) = models.AuditEvent.objects.filter(run_id=run.run_id)
        assert event.actor_id == job.created_by_id and event.detail == "upload “september.csv”: 5 leads"
    from django.contrib.admin.models import LogEntry

    (entry,) = LogEntry.objects.filter(object_id=run.run_id)  # the admin's "Recent actions"
    assert entry.user_id == job.created_by_id and entry.is_addition() and "5 leads" in entry.get_change_message()


def test_a_small_file_is_quoted_and_queued_inside_the_request(admin_client, monkeypatch):
    monkeypatch.setattr(uploads, "INLINE_MAX_BYTES", 256 * 1024)
    monkeypatch.setattr(uploads, "job_start", lambda job_id: pytest.fail("no thread for a small file"))
    page = admin_client.post(UPLOAD, {"file": SimpleUploadedFile("small.csv", QUOTE_CSV.encode()), "label": "small"},
                             follow=True)
    assert page.context["job"].state == UploadState.QUOTED and page.context["quote"]["rows"] == 5
    token = page.context["job"].token
    landing = admin_client.post(reverse("admin:skiptrace_run_upload_confirm", args=[token]), follow=True)
    run = Run.objects.get()
    assert landing.redirect_chain[-1][0] == reverse("admin:skiptrace_run_change", args=[quote(run.run_id)])
    assert run.source_label == "small" and run.total == 5


def test_a_second_confirm_does_not_create_a_second_run(admin_client):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    url = reverse("admin:skiptrace_run_upload_confirm", args=[job.token])
    admin_client.post(url)
    admin_client.post(url)
    wait_state(job, UploadState.DONE)
    assert uploads.jobs_wait(30)
    assert Run.objects.count() == 1 and RunItem.objects.count() == 5


def test_cancel_deletes_the_file_and_creates_nothing(admin_client, settings):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    response = admin_client.post(reverse("admin:skiptrace_run_upload_cancel", args=[job.token]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.state == UploadState.CANCELLED and stored_files(settings) == [] and not Run.objects.exists()
    assert admin_client.post(reverse("admin:skiptrace_run_upload_confirm", args=[job.token])).status_code == 302
    assert not Run.objects.exists()


def test_an_unconfirmed_quote_expires_and_its_file_is_deleted(admin_client, settings):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    later = timezone.now() + dt.timedelta(seconds=uploads.QUOTE_TTL_S + 1)
    assert uploads.uploads_sweep(later) == 1
    job.refresh_from_db()
    assert job.state == UploadState.EXPIRED and stored_files(settings) == []
    page = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token]))
    assert "not confirmed in time" in page.content.decode()


# --- bad files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    ("LeadID,First Name,City,State,Zip\nC-1,Ann,Tampa,FL,33610\n", "street"),
    (b"", "empty"),
    ("LeadID,Address,Zip\r\n\r\n", "no data rows"),
    (b"PK\x03\x04" + bytes(200), ""),
])
def test_a_file_that_is_not_a_lead_list_is_refused_on_the_form_and_nothing_is_kept(admin_client, settings, content,
                                                                                   message):
    response = upload(admin_client, content)
    assert response.status_code == 200
    errors = str(response.context["form"].errors)
    assert message in errors and ("nothing was created" in errors or "is empty" in errors)
    assert not UploadJob.objects.exists() and not Run.objects.exists() and stored_files(settings) == []


def test_a_problem_deep_in_the_file_fails_the_quote_with_its_reason_and_creates_nothing(admin_client, settings):
    rows = [f"D-{i},Ann,Lee,{10 + i} Main St,Tampa,FL,33610" for i in range(50)]
    text = HEADER + "\r\n".join(rows) + '\r\nD-x,Ann,"Lee,1 Main St,Tampa,FL,33610\r\n' + "x,y\r\n" * 150
    job = wait_state(job_of(upload(admin_client, text)), UploadState.FAILED)
    assert "nothing was created" in job.error
    page = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token]))
    assert page.status_code == 200 and job.error in page.content.decode()
    assert not Run.objects.exists() and stored_files(settings) == []


# --- permissions ---------------------------------------------------------------------------------------------


def test_only_staff_with_add_run_may_upload_and_only_their_own_jobs(client, admin_client, django_user_model):
    assert client.get(UPLOAD).status_code == 302  # anonymous: to the login page
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    urls = {name: reverse(f"admin:skiptrace_run_upload{name}", args=[job.token])
            for name in ("_job", "_status", "_confirm", "_cancel")}

    user_with(django_user_model, "viewer", "view_run")
    client.login(username="viewer", password="pw-123456")
    assert client.get(UPLOAD).status_code == 403
    assert upload(client, QUOTE_CSV).status_code == 403
    assert client.get(urls["_job"]).status_code == 403
    assert client.get(urls["_status"]).status_code == 403
    assert client.post(urls["_confirm"]).status_code == 403

    user_with(django_user_model, "other", "add_run", "view_run")
    client.login(username="other", password="pw-123456")
    assert client.get(UPLOAD).status_code == 200
    assert client.get(urls["_job"]).status_code == 404  # someone else's upload
    assert client.get(urls["_status"]).status_code == 404
    assert client.post(urls["_confirm"]).status_code == 404
    assert client.post(urls["_cancel"]).status_code == 404
    job.refresh_from_db()
    assert job.state == UploadState.QUOTED and not Run.objects.exists()

    own = job_of(upload(client, QUOTE_CSV))
    assert own.created_by.username == "other"
    wait_state(own, UploadState.QUOTED)
    assert client.get(reverse("admin:skiptrace_run_upload_job", args=[own.token])).status_code == 200


def test_confirm_needs_post_with_a_csrf_token(admin_client, django_user_model):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    url = reverse("admin:skiptrace_run_upload_confirm", args=[job.token])
    assert admin_client.get(url).status_code == 405
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(job.created_by)
    assert strict.post(url).status_code == 403
    job.refresh_from_db()
    assert job.state == UploadState.QUOTED and not Run.objects.exists()


# --- a thread that dies ------------------------------------------------------------------------------------


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the job catches it."""


def test_a_job_whose_thread_died_is_taken_over_from_where_it_stopped(admin_client, monkeypatch):
    monkeypatch.setattr(uploads, "CHUNK", 2)
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    real = uploads._insert_chunk
    calls = []

    def dies_on_the_second_chunk(*args):
        calls.append(1)
        if len(calls) == 2:
            raise Killed
        return real(*args)

    monkeypatch.setattr(uploads, "_insert_chunk", dies_on_the_second_chunk)
    monkeypatch.setattr(uploads, "job_start", lambda job_id: None)  # no thread: this test is the thread
    assert uploads.job_confirm_start(job)
    with pytest.raises(Killed):
        uploads.job_execute(job.pk, owner="host:1:dead")
    job.refresh_from_db()
    assert job.state == UploadState.PARSING and job.rows_done == 2
    # the first chunk's items are in, but held: no worker takes a half-loaded run
    assert RunItem.objects.filter(run_id=job.run_id).count() == 2
    assert items_claim(limit=10, now=timezone.now(), worker_id="test") == []
    page = admin_client.get(reverse("admin:skiptrace_run_upload_job", args=[job.token])).content.decode()
    assert re.search(r'data-s="rows_done">2</span> of\s+<span data-s="rows_total">5</span>', page)

    monkeypatch.setattr(uploads, "_insert_chunk", real)
    later = timezone.now() + dt.timedelta(seconds=uploads.LEASE_S + 1)
    assert uploads.job_execute(job.pk, owner="host:2:alive") is None  # the lease is still live
    UploadJob.objects.filter(pk=job.pk).update(lease_until=later - dt.timedelta(seconds=uploads.LEASE_S + 2))
    assert uploads.job_execute(job.pk, owner="host:2:alive") == UploadState.DONE
    positions = list(RunItem.objects.filter(run_id=job.run_id).order_by("position").values_list("position", "lead_id"))
    assert positions == [(0, "Q-1"), (1, "Q-2"), (2, "Q-3"), (3, "Q-4"), (4, "Q-5")]  # none twice, none lost
    assert len(items_claim(limit=10, now=timezone.now(), worker_id="test")) == 4


def test_the_status_poll_restarts_an_abandoned_job(admin_client, monkeypatch):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    monkeypatch.setattr(uploads, "job_start", lambda job_id: None)
    assert uploads.job_confirm_start(job)  # queued, but its thread never came (the process died)
    monkeypatch.undo()
    status_url = reverse("admin:skiptrace_run_upload_status", args=[job.token])
    assert admin_client.get(status_url).json()["state"] == "queued"  # within the grace: left alone
    UploadJob.objects.filter(pk=job.pk).update(updated_at=timezone.now() - dt.timedelta(minutes=5))
    admin_client.get(status_url)
    assert wait_state(job, UploadState.DONE).run_id


def test_the_worker_housekeeping_hook_takes_over_abandoned_jobs_only(admin_client, monkeypatch):
    job = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    live = wait_state(job_of(upload(admin_client, QUOTE_CSV)), UploadState.QUOTED)
    monkeypatch.setattr(uploads, "job_start", lambda job_id: None)
    assert uploads.job_confirm_start(job) and uploads.job_confirm_start(live)
    monkeypatch.undo()
    UploadJob.objects.filter(pk=job.pk).update(owner="gone:1:1", lease_until=timezone.now() - dt.timedelta(seconds=1))
    UploadJob.objects.filter(pk=live.pk).update(owner="alive:1:1",
                                                lease_until=timezone.now() + dt.timedelta(seconds=30))
    assert uploads.upload_jobs_kick() == 1
    assert wait_state(job, UploadState.DONE).run_id
    live.refresh_from_db()
    assert live.state == UploadState.QUEUED and live.owner == "alive:1:1"  # a live lease is left alone
    UploadJob.objects.filter(pk=live.pk).update(state=UploadState.CANCELLED)


# --- 100,000 rows while the API takes submits ---------------------------------------------------------------


# 100,000 rows on SQLite, where every chunk takes the one write lock the submits need too. On
# PostgreSQL (row locks: a submit never waits on a chunk) 20,000 rows, 20 chunks, prove the same
# paths in a fifth of the suite's time.
ROWS = 100_000 if connection.vendor == "sqlite" else 20_000


@pytest.mark.slow
def test_a_big_upload_runs_in_the_background_and_api_submits_never_see_a_5xx(admin_client, settings):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(bench_leads.HEADER)
    writer.writerows(bench_leads.rows(ROWS, bad_frac=0.01))
    data = buf.getvalue().encode("utf-8-sig")

    statuses: list[int] = []
    latencies: list[float] = []
    stop = threading.Event()

    def submitter(n: int) -> None:
        from django.db import connection

        api = ApiClient()
        i = 0
        try:
            while not stop.is_set():
                lead = {"lead_id": f"API-{n}-{i}", "first_name": "Dana", "last_name": "Reyes",
                        "street": f"{100 + i} Submit {n} Rd", "city": "Tampa", "state": "FL", "zip": "33610"}
                sent = time.monotonic()
                statuses.append(api.post_json("/api/skiptrace-runs", {"source_label": "api", "leads": [lead]})
                                .status_code)
                latencies.append(time.monotonic() - sent)
                i += 1
                time.sleep(0.02)
        finally:
            connection.close()

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        started = time.monotonic()
        job = job_of(upload(admin_client, data, name="big.csv"))
        assert time.monotonic() - started < 5
        job = wait_state(job, UploadState.QUOTED, timeout=40)
        assert json.loads(job.quote_json)["quote"]["rows"] == ROWS
        started = time.monotonic()
        assert admin_client.post(reverse("admin:skiptrace_run_upload_confirm", args=[job.token])).status_code == 302
        assert time.monotonic() - started < 5
        status_url = reverse("admin:skiptrace_run_upload_status", args=[job.token])
        seen = []
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline:
            status = admin_client.get(status_url)
            assert status.status_code == 200
            seen.append(status.json()["rows_done"])
            if status.json()["state"] in ("done", "failed"):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    job.refresh_from_db()
    assert job.state == UploadState.DONE, job.error
    assert any(0 < n < ROWS for n in seen)  # progress was visible on the way
    assert statuses and all(s < 500 for s in statuses), sorted(set(statuses))
    assert statuses.count(200) == len(statuses)
    # Each chunk holds SQLite's write lock for milliseconds: a submit never waits near the busy
    # timeout (5 s), where it would fail. (One transaction for the whole file made submits wait 4.5 s
    # here.) The bound leaves room for a slow host: one submit waited 2.1 s in a clean-clone CI run
    # on a 2-CPU host about a fifth slower than the one 2.0 s was set on.
    assert max(latencies) < 3.0, max(latencies)
    run = Run.objects.get(run_id=job.run_id)
    assert run.total == ROWS and run.failed == job.rows_invalid > 0
    assert RunItem.objects.filter(run=run).count() == ROWS
    assert not RunItem.objects.filter(run=run, status=ItemStatus.QUEUED, not_before__isnull=False).exists()
