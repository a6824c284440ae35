"""Run state in one place (``skiptrace.states``) and admission in one function (``skiptrace.admission``).

- the Python state (``Run.state``) and the SQL one (``Run.objects.in_state``) agree on every
  combination of a run's facts;
- an operator's pause and a budget / provider wait are separate facts: pausing and resuming a
  budget-paused run leaves it waiting for the budget, and the next budget day restarts it;
- a run waiting for credentials (401/402) is ``paused`` everywhere: badge, filter, index count,
  and "Resume selected runs" takes it;
- a run whose leads are all cache hits is admitted while the budget is spent, by the API, the
  console and the CLI alike; one lead that needs the provider is refused (API) or warned about;
- claims and calls record the worker that made them.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from pathlib import Path

import pytest
from django.core.management import call_command
from django.urls import reverse

from skiptrace import guards
from skiptrace.admin_views import ops_summary
from skiptrace.intake import LeadInput
from skiptrace.models import ProviderCall, Run, RunItem
from skiptrace.money import Policy
from skiptrace.runs import run_create, run_pause, run_resume, run_status
from skiptrace.states import OPERATOR_PAUSE, RunState, WaitReason
from skiptrace.worker import Worker
from tests.fakes import drain as work
from tests.helpers import assert_error, run_leads

pytestmark = pytest.mark.django_db

RUNS = "/admin/skiptrace/run/"


def lead(n: int, marker: str = "ALWAYSMATCH") -> dict:
    return {"lead_id": f"S-{n:03d}", "first_name": "Dana", "last_name": "Reyes",
            "street": f"{100 + n} {marker} Rd", "city": "Tampa", "state": "FL", "zip": "33610"}


def lead_input(n: int) -> LeadInput:
    return LeadInput(**lead(n))


# --- one definition of the states -------------------------------------------------------------------


def test_python_and_sql_agree_on_the_state_of_every_combination_of_facts():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    reasons = [None, *WaitReason.values]
    for n, (finished, started, operator, soft, override, reason) in enumerate(
            itertools.product([False, True], [False, True], [False, True], [False, True], [False, True], reasons)):
        Run.objects.create(run_id=f"run_{n:04d}", created_at=now, finished_at=now if finished else None,
                           started_at=now if started else None, paused_by_operator=operator, soft_paused=soft,
                           override_budget=override, reason=reason)
    for state in RunState.values:
        in_sql = set(Run.objects.in_state(state).values_list("run_id", flat=True))
        in_python = {r.run_id for r in Run.objects.all() if r.state == state}
        assert in_sql == in_python, state
    counts = Run.objects.state_counts()
    assert counts == {s: sum(1 for r in Run.objects.all() if r.state == s) for s in counts}


# --- an operator's pause and a budget wait are separate facts ------------------------------------------


def test_pausing_and_resuming_a_budget_paused_run_leaves_it_waiting_for_the_budget(api_client, sandbox, settings,
                                                                                   clock):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 7  # one match
    created = run_create(source_label="budget", leads=[lead_input(1), lead_input(2)], policy=Policy(), now=clock())
    run = created.run
    worker = Worker(concurrency=1, clock=clock)
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert (run.state, run.reason, run.soft_paused) == (RunState.PAUSED, WaitReason.DAILY_BUDGET, True)

    assert run_pause(run=run)
    run.refresh_from_db()
    assert (run.reason, run.soft_paused, run.paused_by_operator) == (WaitReason.DAILY_BUDGET, True, True)
    assert run_status(run)["reason"] == OPERATOR_PAUSE

    clock.advance(days=1)  # a new budget day: the operator's pause still holds the run
    guards.budget_unpause(clock())
    run.refresh_from_db()
    assert run.paused_by_operator and run.state == RunState.PAUSED
    assert not Worker(concurrency=1, clock=clock).process_one_batch()

    run_resume(run=run, override_budget=False, now=clock())
    run.refresh_from_db()
    assert not run.paused_by_operator
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert run.state == RunState.FINISHED and run.done == 2


def test_a_budget_paused_run_paused_and_resumed_the_same_day_is_restarted_by_the_next_budget_day(sandbox, settings,
                                                                                                  clock):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 7
    run = run_create(source_label="budget", leads=[lead_input(1), lead_input(2)], policy=Policy(), now=clock()).run
    worker = Worker(concurrency=1, clock=clock)
    while worker.process_one_batch():
        pass
    run_pause(run=run)
    run.refresh_from_db()
    run_resume(run=run, override_budget=False, now=clock())
    run.refresh_from_db()
    assert (run.state, run.reason, run_status(run)["reason"]) == (RunState.PAUSED, WaitReason.DAILY_BUDGET,
                                                                  WaitReason.DAILY_BUDGET)
    clock.advance(days=1)
    assert guards.budget_unpause(clock()) == 1
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert run.state == RunState.FINISHED and run.done == 2


# --- a credentials wait is "paused" everywhere -------------------------------------------------------------


@pytest.mark.parametrize("reason", [WaitReason.PROVIDER_AUTH, WaitReason.PROVIDER_OUT_OF_CREDITS])
def test_a_run_waiting_for_credentials_is_paused_in_the_badge_filter_index_and_resume_action(reason, admin_client,
                                                                                            clock):
    run = run_create(source_label="creds", leads=[lead_input(1)], policy=Policy(), now=clock()).run
    Run.objects.filter(pk=run.pk).update(started_at=clock(), reason=reason)
    run.refresh_from_db()
    assert run.state == RunState.PAUSED
    assert ops_summary(clock())["runs"] == {"queued": 0, "running": 0, "paused": 1}
    assert run.run_id in admin_client.get(RUNS, {"state": "paused"}).content.decode()
    assert run.run_id not in admin_client.get(RUNS, {"state": "running"}).content.decode()
    assert f"paused: {reason}" in admin_client.get(RUNS).content.decode()
    response = admin_client.post(RUNS, {"action": "resume_runs", "_selected_action": [run.run_id]}, follow=True)
    assert response.status_code == 200
    run.refresh_from_db()
    assert run.reason is None and run.state == RunState.RUNNING


# --- admission: one rule, every entry point ------------------------------------------------------------


def test_an_api_run_of_cache_hits_is_admitted_while_the_budget_is_spent(api_client, sandbox, settings):
    run_leads(api_client, [lead(1), lead(2)])  # paid for once: now in the cache
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    response = api_client.post_json("/api/skiptrace-runs", {"source_label": "again", "leads": [lead(1), lead(2)]})
    assert response.status_code == 200, response.content
    work()
    run = Run.objects.get(run_id=response.json()["run_id"])
    assert (run.state, run.cache_hits, run.cost_cents) == (RunState.FINISHED, 2, 0)
    # one lead the cache cannot serve: refused
    refused = api_client.post_json("/api/skiptrace-runs", {"source_label": "new", "leads": [lead(1), lead(3)]})
    assert assert_error(refused, 429, "BudgetPause")["reason"] == "daily_budget"
    # force wants a fresh answer: refused too
    forced = api_client.post_json("/api/skiptrace-runs", {"source_label": "forced", "leads": [lead(1)],
                                                          "policy": {"force": True}})
    assert_error(forced, 429, "BudgetPause")


def test_the_console_upload_and_the_cli_warn_only_when_a_lead_needs_the_spent_budget(api_client, admin_client,
                                                                                    sandbox, settings, tmp_path):
    run_leads(api_client, [lead(1)])
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    header = "LeadID,First Name,Last Name,Street,City,State,Zip\r\n"
    cached_csv = header + "S-001,Dana,Reyes,101 ALWAYSMATCH Rd,Tampa,FL,33610\r\n"
    new_csv = cached_csv + "S-002,Dana,Reyes,102 ALWAYSMATCH Rd,Tampa,FL,33610\r\n"

    def upload(text: str) -> list[str]:
        file = io.BytesIO(text.encode())
        file.name = "leads.csv"
        response = admin_client.post(f"{RUNS}upload/", {"file": file, "label": ""}, follow=True)
        job = response.context["job"]  # the quote: confirm it
        response = admin_client.post(reverse("admin:skiptrace_run_upload_confirm", args=[job.token]), follow=True)
        return [str(m) for m in response.context["messages"]]

    assert not any("budget is spent" in m for m in upload(cached_csv))
    assert any("budget is spent" in m for m in upload(new_csv))

    def cli(text: str) -> str:
        path = Path(tmp_path) / "leads.csv"
        path.write_text(text, encoding="utf-8")
        err = io.StringIO()
        call_command("skiptrace_run", str(path), stdout=io.StringIO(), stderr=err)
        return err.getvalue()

    assert "budget is spent" not in cli(cached_csv)
    assert "budget is spent" in cli(new_csv)


# --- the worker's id on claims and calls --------------------------------------------------------------------


def test_claims_and_calls_record_the_worker_that_made_them(sandbox):
    run = run_create(source_label="w", leads=[lead_input(1)], policy=Policy()).run
    worker = Worker(concurrency=1)
    while worker.process_one_batch():
        pass
    assert set(RunItem.objects.filter(run=run).values_list("worker_id", flat=True)) == {worker.worker_id[:64]}
    assert set(ProviderCall.objects.filter(run_id=run.run_id).values_list("worker_id", flat=True)) == {
        worker.worker_id[:64]}


# --- the limiter's PostgreSQL connection -----------------------------------------------------------------


def test_the_limiter_connects_with_djangos_settings_quoted_and_with_their_ssl_options():
    from psycopg.conninfo import conninfo_to_dict

    conninfo = guards.limiter_conninfo({
        "NAME": "convexa", "USER": "ops", "PASSWORD": "it's a secret", "HOST": "db.internal", "PORT": "6432",
        "OPTIONS": {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem", "isolation_level": 1,
                    "server_side_binding": True},
    })
    assert conninfo_to_dict(conninfo) == {
        "dbname": "convexa", "user": "ops", "password": "it's a secret", "host": "db.internal", "port": "6432",
        "sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem",
    }
    assert conninfo_to_dict(guards.limiter_conninfo({"NAME": "convexa", "USER": "", "HOST": ""})) == {"dbname": "convexa"}
