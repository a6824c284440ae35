"""The caps in the database (``BudgetSetting``): every worker reads the current daily cap, and the
optional per-run cap holds a run to at most its cap (settled + in flight worst case), pausing it
with ``run_budget`` until the cap is raised or removed, or an override."""

from __future__ import annotations

import pytest
from django.utils import timezone

from skiptrace import admission, guards, selectors
from skiptrace.guards import budget as budget_guard
from skiptrace.models import BudgetSetting, CallState, ItemStatus, ProviderCall
from skiptrace.runs import run_create, run_resume
from skiptrace.service import Policy
from skiptrace.worker import Worker
from tests.fakes import leads
from tests.money.test_service import work

pytestmark = pytest.mark.django_db


def set_caps(daily_cents: int, run_cents: int | None = None) -> None:
    BudgetSetting.objects.update_or_create(pk=BudgetSetting.SINGLETON,
                                           defaults={"daily_cap_cents": daily_cents, "run_cap_cents": run_cents})


def run_spend(run_id: str) -> int:
    return budget_guard.run_spent_cents([run_id])[run_id]


# --- where the cap comes from ----------------------------------------------------------------------


def test_without_a_row_the_environment_gives_the_cap(settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 1234
    assert guards.budget_fit(1000, now=timezone.now()) == 1234 // settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    assert budget_guard.budget_caps() == (1234, None, False)


def test_a_stored_cap_wins_over_the_environment_for_every_reader(settings, clock):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 100_000
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(20)
    now = clock()
    assert guards.budget_fit(10, now=now) == 2  # the worker's cut
    assert admission.quote([], policy=Policy(), now=now)["budget_left_usd"] == 0.20  # the quote
    assert admission.budget_refusal(now).fields["daily_cap_usd"] == 0.20  # the 429
    assert selectors.metrics_snapshot(now)["budget_cap_cents"] == 20
    assert selectors.budget_summary(now)["cap_usd"] == 0.20


def test_a_lowered_cap_stops_the_next_reservation_without_a_restart(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    run = run_create(source_label="t", leads=leads(6), policy=Policy()).run
    worker = Worker(concurrency=1, batch_size=2)
    assert worker.process_one_batch()
    assert len(provider.items) == 2
    set_caps(14)  # the running worker reads the new value at its next reservation: no more fits
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert len(provider.items) == 2 and run.state == "paused" and run.reason == "daily_budget"
    assert guards.budget_spent_cents_today() <= 14


def test_a_raised_cap_lets_budget_paused_runs_go_on(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(7)
    run = run_create(source_label="t", leads=leads(3), policy=Policy()).run
    work()
    run.refresh_from_db()
    assert run.state == "paused" and len(provider.items) == 1
    set_caps(100)
    assert guards.budget_unpause(timezone.now()) == 1
    work()
    run.refresh_from_db()
    assert run.state == "finished" and len(provider.items) == 3


# --- the per-run cap ------------------------------------------------------------------------------------


def test_a_run_never_spends_more_than_the_run_cap_and_waits_with_its_own_reason(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(10_000, run_cents=20)  # 2 calls fit (14), a third would be 21
    run = run_create(source_label="t", leads=leads(5), policy=Policy()).run
    work()
    run.refresh_from_db()
    assert len(provider.items) == 2
    assert run_spend(run.run_id) <= 20
    assert run.state == "paused" and run.reason == "run_budget" and run.soft_paused
    assert run.queued == 3 and run.done == 2


def test_the_run_cap_counts_open_calls_at_their_worst_case(settings, clock):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(10_000, run_cents=14)
    run = run_create(source_label="t", leads=leads(1), policy=Policy()).run
    ProviderCall.objects.create(
        provider="batchdata", idempotency_key="x" * 64, lead_id="Z", run_id=run.run_id, request_json="{}",
        signature="s" * 64, batch_id="b", budget_day=guards.budget_day(clock()), estimate_cents=7,
        state=CallState.SENT)
    cut = budget_guard.budget_cut([run.run_id, run.run_id, "other_run"], now=clock())
    assert cut.fit == [0, 2] and cut.over_run == [1] and cut.over_day == []


def test_the_run_cap_of_one_run_does_not_stop_another(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(10_000, run_cents=7)
    first = run_create(source_label="a", leads=leads(3, "A"), policy=Policy()).run
    second = run_create(source_label="b", leads=leads(3, "B", "Elm"), policy=Policy()).run
    work()
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.reason == "run_budget" and second.reason == "run_budget"
    assert len(provider.items) == 2  # one call each: each run's own cap, not a shared one
    assert run_spend(first.run_id) == 7 and run_spend(second.run_id) == 7


def test_raising_the_run_cap_lets_the_run_go_on(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(10_000, run_cents=7)
    run = run_create(source_label="t", leads=leads(3), policy=Policy()).run
    work()
    run.refresh_from_db()
    assert run.reason == "run_budget" and len(provider.items) == 1
    worker = Worker(concurrency=1)
    worker.housekeeping(force=True)
    run.refresh_from_db()
    assert run.reason == "run_budget"  # nothing changed: still waits
    set_caps(10_000, run_cents=None)  # no per-run cap any more
    worker.housekeeping(force=True)
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert run.state == "finished" and len(provider.items) == 3


def test_an_override_lets_a_run_past_its_cap(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(10_000, run_cents=7)
    run = run_create(source_label="t", leads=leads(3), policy=Policy()).run
    work()
    run_resume(run=run, override_budget=True)
    work()
    run.refresh_from_db()
    assert run.state == "finished" and len(provider.items) == 3
    assert {i.status for i in run.items.all()} == {ItemStatus.DONE}


def test_the_daily_cap_still_holds_under_a_generous_run_cap(provider, settings):
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    set_caps(14, run_cents=1_000)
    run = run_create(source_label="t", leads=leads(5), policy=Policy()).run
    work()
    run.refresh_from_db()
    assert len(provider.items) == 2 and run.reason == "daily_budget"
