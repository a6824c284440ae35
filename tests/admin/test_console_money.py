"""Honest spend in the console: settled spend and the in-flight worst case apart, per-run spend and
cost per matched lead, provider calls counted one way on the run page, its status JSON, the runs
list and the report; buttons that match the state; live updates while paused; an ETA; one id per
cache entry."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from skiptrace import guards, reports
from skiptrace.models import CacheEntry, CallState, ItemStatus, ProviderCall, Run, RunItem
from tests.admin.test_admin import CACHE, RUNS, fail_items, make_run, page_of

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def call(run: Run, n: int, *, state: str, cost: int = 0, estimate: int = 7, batch: str = "b1",
         matched: bool | None = None) -> ProviderCall:
    return ProviderCall.objects.create(
        provider="batchdata", idempotency_key=f"{run.run_id}-{n}".ljust(64, "k")[:64], lead_id=f"R-{n}",
        run_id=run.run_id, request_json="{}", signature=f"sig{n}".ljust(64, "s"), batch_id=batch,
        budget_day=guards.budget_day(timezone.now()), estimate_cents=estimate, cost_cents=cost, state=state,
        matched=matched,
    )


def money_run() -> Run:
    """4 items: 2 answered (one matched, $0.07), a sanitized retry's errored call, one call in flight."""
    run = make_run(4)
    done = call(run, 0, state=CallState.COMPLETED, cost=7, matched=True)
    call(run, 1, state=CallState.COMPLETED, cost=0, matched=False)
    call(run, 2, state=CallState.ERRORED, batch="b2")
    call(run, 3, state=CallState.SENT, batch="b2")
    RunItem.objects.filter(run=run, lead_id__in=["R-0"]).update(status=ItemStatus.DONE, provider_call=done)
    RunItem.objects.filter(run=run, lead_id="R-1").update(status=ItemStatus.DONE,
                                                          provider_call=ProviderCall.objects.get(lead_id="R-1"))
    RunItem.objects.filter(run=run, lead_id="R-3").update(status=ItemStatus.IN_FLIGHT)
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now(), cost_cents=7)
    from skiptrace.service import runs_refresh

    runs_refresh([run.run_id], now=timezone.now(), force=True)
    run.refresh_from_db()
    return run


def status_of(client, run: Run) -> dict:
    return client.get(f"/admin/skiptrace/run/{run.run_id}/status/").json()


# --- one way to count, settled and in flight apart ---------------------------------------------------


def test_run_page_status_json_and_report_count_provider_calls_the_same_way(admin_client):
    run = money_run()
    status = status_of(admin_client, run)
    report = reports.run_report(run)
    assert status["provider_calls"] == report["totals"]["provider_calls"] == 4  # rows, errors included
    assert status["provider_requests"] == report["provider_requests"] == 2  # distinct batches
    page = admin_client.get(page_of(run)).content.decode()
    assert '<b data-field="provider_calls">4</b>' in page
    assert '<b data-field="provider_requests">2</b>' in page


def test_settled_spend_and_in_flight_worst_case_are_shown_apart(admin_client):
    run = money_run()
    status = status_of(admin_client, run)
    assert status["settled_usd"] == 0.07 and status["in_flight_usd"] == 0.07
    assert status["budget_settled_usd"] == 0.07 and status["budget_in_flight_usd"] == 0.07
    assert status["budget_spent_usd"] == 0.14  # what the cap is held against: both
    page = admin_client.get(page_of(run)).content.decode()
    assert '<b data-field="settled_usd">$0.07</b>' in page
    assert '<b data-field="in_flight_usd">$0.07</b>' in page
    assert "in flight" in page[page.index('id="budget-today"'):]
    report = reports.run_report(run)
    assert report["totals"]["cost_usd"] == 0.07 and report["in_flight_worst_case_usd"] == 0.07


def test_cost_per_matched_lead(admin_client):
    run = money_run()
    status = status_of(admin_client, run)
    assert status["matched_leads"] == 1 and status["cost_per_match_usd"] == 0.07
    assert reports.run_report(run)["cost_per_match_usd"] == 0.07
    assert '<b data-field="cost_per_match_usd">$0.0700</b>' in admin_client.get(page_of(run)).content.decode()


def test_the_runs_list_shows_calls_and_settled_and_in_flight_apart(admin_client):
    run = money_run()
    page = admin_client.get(RUNS).content.decode()
    row = page[page.index(run.run_id):]
    assert "$0.07 settled" in row and "+ $0.07 in flight (worst case)" in row
    assert "2 requests" in row


# --- actions that match the state ----------------------------------------------------------------------


def buttons(client, run: Run) -> set[str]:
    page = client.get(page_of(run)).content.decode()
    return {b for b in ("btn-pause", "btn-resume", "btn-resume-override") if f'id="{b}"' in page}


def test_a_running_run_offers_pause_only(admin_client):
    run = make_run(2)
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now())
    assert buttons(admin_client, run) == {"btn-pause"}


def test_an_operator_paused_run_offers_resume_not_pause(admin_client):
    run = make_run(2)
    admin_client.post(f"/admin/skiptrace/run/{run.run_id}/pause/")
    assert buttons(admin_client, run) == {"btn-resume"}


def test_a_budget_paused_run_highlights_the_override_and_offers_no_pause(admin_client):
    run = make_run(2)
    Run.objects.filter(pk=run.pk).update(soft_paused=True, reason="daily_budget", started_at=timezone.now())
    page = admin_client.get(page_of(run)).content.decode()
    assert 'id="btn-resume-override" class="default"' in page
    assert 'id="btn-pause"' not in page and 'id="btn-resume"' not in page  # a plain resume would change nothing
    assert "budget-pause-note" in page


def test_a_run_paused_at_its_own_cap_says_so(admin_client):
    run = make_run(2)
    Run.objects.filter(pk=run.pk).update(soft_paused=True, reason="run_budget", started_at=timezone.now())
    page = admin_client.get(page_of(run)).content.decode()
    assert "reached its per-run cap" in page and 'id="btn-resume-override" class="default"' in page


def test_a_viewer_gets_no_buttons(client, django_user_model):
    run = make_run(2)
    user = django_user_model.objects.create_user("v", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_run"))
    client.login(username="v", password="pw-123456")
    assert buttons(client, run) == set()


# --- live while paused, an ETA --------------------------------------------------------------------------


def test_the_run_page_keeps_polling_while_paused(admin_client):
    run = make_run(2)
    admin_client.post(f"/admin/skiptrace/run/{run.run_id}/pause/")
    page = admin_client.get(page_of(run)).content.decode()
    assert "setTimeout(tick" in page and "updating every" in page
    finished = make_run(1, prefix="F")
    fail_items(finished)
    assert "setTimeout(tick" not in admin_client.get(page_of(finished)).content.decode()


def test_the_eta_comes_from_the_recent_throughput(admin_client):
    run = make_run(10)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(started_at=now - dt.timedelta(minutes=10))
    ids = list(RunItem.objects.filter(run=run).order_by("id").values_list("id", flat=True))
    RunItem.objects.filter(id__in=ids[:5]).update(status=ItemStatus.DONE, updated_at=now - dt.timedelta(seconds=30))
    from skiptrace.service import runs_refresh

    runs_refresh([run.run_id], now=now, force=True)
    status = status_of(admin_client, run)
    # 5 settled in the last 5 minutes: 1 per minute; 5 left: about 5 minutes
    assert status["eta"]["per_min"] == 1.0
    assert 290 <= status["eta"]["eta_s"] <= 310
    assert status["eta_text"].startswith("about 5 min")
    admin_client.post(f"/admin/skiptrace/run/{run.run_id}/pause/")
    assert status_of(admin_client, run)["eta_text"] == "paused: no estimate"


# --- one id per cache entry ----------------------------------------------------------------------------


def test_a_cache_entry_has_one_id_in_its_list_title_and_the_calls_link(admin_client):
    run = make_run(1)
    c = call(run, 0, state=CallState.COMPLETED, cost=7, matched=True)
    entry = CacheEntry.objects.create(provider="batchdata", idempotency_key="k" * 64, payload_hash="p",
                                      response_json=json.dumps({}), parsed_contacts_json="{}",
                                      ttl_expires_at=timezone.now() + dt.timedelta(days=1), signature="s" * 64,
                                      provider_call=c)
    page = admin_client.get(f"{CACHE}{entry.pk}/change/").content.decode()
    assert f"cache entry {entry.pk}" in page
    assert "kkkkkkkkkkkk" not in page.split("<title>")[1].split("</title>")[0]
    call_page = admin_client.get(f"/admin/skiptrace/providercall/{c.pk}/change/").content.decode()
    assert f"cache entry {entry.pk}" in call_page
