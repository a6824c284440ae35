"""Provider faults through the sandbox: the breaker opens as specified, nothing is lost, every item
ends ``done`` or ``failed`` with a reason once the fault clears, and the report accounts for every
item and every cent (the money and audit invariants 1, 3 and 4 of `skiptrace.money`).

Time is an injected clock: backoffs and the breaker's probe interval pass by ``clock.advance``,
never by sleeping. Each test works the queue in this thread (``Worker(concurrency=1)`` +
``process_one_batch()``) against the real HTTP client and the bundled sandbox on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest
from django.db.models import Sum

from devtools.sandbox import item_key
from skiptrace import guards
from skiptrace.intake import LeadInput
from skiptrace.models import (
    OPEN_CALL_STATES,
    UNKNOWN_OUTCOME_STATES,
    BreakerSample,
    CallState,
    ItemStatus,
    ProviderCall,
    Run,
    RunItem,
)
from skiptrace.reports import run_report
from skiptrace.runs import run_resume
from skiptrace.worker import Worker
from tests import fakes
from tests.fakes import MAX_STEPS, drain
from tests.fakes import leads as make_leads

pytestmark = pytest.mark.django_db

LOST_FAULTS = ("timeout", "reset")  # the request reached the provider, its answer never came back
# A 200 we cannot read: the provider did the work and bills it; the answer is unknown, like a lost one.
UNREADABLE_FAULTS = ("malformed", "drift", "short")
UNKNOWN_OUTCOME = {**{f: (CallState.LOST, "provider_outcome_unknown") for f in LOST_FAULTS},
                   **{f: (CallState.UNREADABLE, "provider_unreadable") for f in UNREADABLE_FAULTS}}
TRANSIENT_FAULTS = ("500", "429")  # errored, cost 0, retried


# --- helpers -------------------------------------------------------------------------------------


def new_worker(clock, batch_size: int | None = None) -> Worker:
    """Built after the settings of the test (timeout, URL) are in place: the client reads them."""
    return Worker(concurrency=1, clock=clock, batch_size=batch_size, idle_sleep_s=0)


def settle(worker: Worker, clock, runs: list[Run], *, step_s: float = 61.0) -> None:
    """Work and let time pass (past every backoff and probe interval) until the runs finish."""
    for _ in range(MAX_STEPS):
        drain(worker)
        if all(Run.objects.get(pk=r.pk).finished_at is not None for r in runs):
            return
        clock.advance(seconds=step_s)
    raise AssertionError("runs never finished: " + ", ".join(
        f"{r.run_id}: {Counter(RunItem.objects.filter(run=r).values_list('status', flat=True))}" for r in runs))


def breaker(clock) -> str:
    return guards.breaker_state(clock())


def sent_call_keys() -> Counter:
    """What our audit rows say reached the provider: every call that was marked sent, by item key."""
    calls = ProviderCall.objects.exclude(sent_at=None).values_list("request_json", flat=True)
    return Counter(item_key(json.loads(r)) for r in calls)


def assert_nothing_lost(sandbox) -> None:
    """Invariant 1: every item the provider received has its call row (and no row claims a send the
    provider never saw): the audit table and the provider agree lead by lead."""
    assert Counter(sandbox.stats.snapshot()["item_keys"]) == sent_call_keys()
    assert not ProviderCall.objects.filter(state__in=OPEN_CALL_STATES).exists()


def assert_accounted(run: Run, settings) -> dict:
    """Every item ended done or failed with a reason; the report counts every item and every cent."""
    run.refresh_from_db()
    assert run.state == "finished", (run.state, run.reason)
    items = list(RunItem.objects.filter(run=run))
    assert {i.status for i in items} <= {ItemStatus.DONE, ItemStatus.FAILED}
    for item in items:
        if item.status == ItemStatus.FAILED:
            reason, _, detail = (item.last_error or "").partition(":")
            assert reason.strip() and detail.strip(), item.last_error
        else:
            assert item.provider_call_id is not None  # run -> lead -> provider call (invariant 4)
    calls = list(ProviderCall.objects.filter(run_id=run.run_id))
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    for call in calls:
        if call.state == CallState.COMPLETED:
            assert call.cost_cents == (price if call.matched else 0), call
        elif call.state == CallState.ERRORED:
            assert call.cost_cents == 0, call
        else:
            assert call.state in UNKNOWN_OUTCOME_STATES and call.cost_cents == call.estimate_cents == price, call
    spend = ProviderCall.objects.filter(run_id=run.run_id).aggregate(s=Sum("cost_cents"))["s"] or 0
    report = run_report(run)
    totals = report["totals"]
    assert totals["total"] == len(items)
    assert totals["done"] + totals["failed"] == totals["total"]
    assert totals["done"] == sum(1 for i in items if i.status == ItemStatus.DONE)
    assert round(totals["cost_usd"] * 100) == spend == run.cost_cents
    assert sum(e["count"] for e in report["errors"]) == totals["failed"]
    return report


def fault_sequence(worker: Worker, sandbox, clock, faults: list[str | None]) -> list[str]:
    """One batch per entry, the sandbox set to that fault (None = healthy); the breaker after each."""
    states = []
    for fault in faults:
        sandbox.update_config(fault=fault)
        before = sandbox.stats.snapshot()["requests"]
        assert worker.process_one_batch()
        assert sandbox.stats.snapshot()["requests"] == before + 1
        states.append(breaker(clock))
    sandbox.update_config(fault=None)
    return states


@pytest.fixture
def fast_timeout(settings, sandbox):
    """A read timeout the `timeout` fault outlasts: the request is sent and its answer never read."""
    settings.PROVIDER_TIMEOUT_S = 1.0  # small, yet roomy for a healthy answer on a loaded machine
    sandbox.update_config(hang_s=2.5)
    return settings


# --- the breaker opens at the error rate over CIRCUIT_MIN_SAMPLES --------------------------------


@pytest.mark.parametrize("fault", LOST_FAULTS + UNREADABLE_FAULTS + TRANSIENT_FAULTS)
def test_breaker_opens_at_the_error_rate_once_min_samples_exist_then_probes_and_recovers(
        fault, sandbox, clock, settings, fast_timeout, api_client):
    settings.CIRCUIT_MIN_SAMPLES = 5
    settings.CIRCUIT_BREAKER_ERROR_RATE = 0.4
    settings.CIRCUIT_PROBE_INTERVAL_S = 60
    run = create(clock, make_leads(12))
    worker = new_worker(clock, batch_size=1)

    # 3 good requests, then 1 failure: 1/4 -- fewer than 5 samples, and under the rate anyway.
    assert fault_sequence(worker, sandbox, clock, [None, None, None, fault]) == ["closed"] * 4
    # The 5th request fails: 2/5 = 0.4 over 5 samples -> open.
    assert fault_sequence(worker, sandbox, clock, [fault]) == ["open"]
    assert BreakerSample.objects.count() == 5

    # While open, nothing leaves: every claimable item goes back to wait for the breaker.
    requests = sandbox.stats.snapshot()["requests"]
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == requests
    run.refresh_from_db()
    assert run.state == "paused" and run.reason == "circuit_open"
    status = api_client.get(f"/api/skiptrace-runs/{run.run_id}/status").json()
    assert status["state"] == "paused" and status["reason"] == "circuit_open"
    assert api_client.get("/api/health").json()["provider"] == "circuit_open"
    clock.advance(seconds=30)  # half the probe interval: still nothing
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == requests

    # Past the interval, with the fault still on: exactly one probe, it fails, the breaker stays open.
    sandbox.update_config(fault=fault)
    clock.advance(seconds=31)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == requests + 1
    assert breaker(clock) == "open"

    # The fault clears; at the next probe time one probe goes, succeeds, and the rest follow.
    sandbox.update_config(fault=None)
    clock.advance(seconds=61)
    settle(worker, clock, [run])
    assert breaker(clock) == "closed"

    report = assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    failed = RunItem.objects.filter(run=run, status=ItemStatus.FAILED)
    if fault in UNKNOWN_OUTCOME:  # the three requests whose answers are unknown: billed at estimate, not re-sent
        state, reason = UNKNOWN_OUTCOME[fault]
        assert failed.count() == 3
        assert all(i.last_error.startswith(reason) for i in failed)
        assert ProviderCall.objects.filter(state=state).count() == 3
        assert report["lost_calls" if state == CallState.LOST else "unreadable_calls"] == 3
        assert max(sandbox.stats.snapshot()["item_keys"].values()) == 1
    else:  # transient: each failed lead was retried after its backoff and is done now
        assert not failed.exists()
        assert ProviderCall.objects.filter(state=CallState.ERRORED).count() == 3
        assert ProviderCall.objects.filter(state=CallState.COMPLETED).count() == 12


def test_breaker_stays_closed_below_min_samples_even_when_every_request_fails(sandbox, clock, settings):
    settings.CIRCUIT_MIN_SAMPLES = 5
    run = create(clock, make_leads(6))
    worker = new_worker(clock, batch_size=1)
    assert fault_sequence(worker, sandbox, clock, ["500"] * 4) == ["closed"] * 4  # 4/4 failed, only 4 samples
    assert fault_sequence(worker, sandbox, clock, ["500"]) == ["open"]  # the 5th sample
    settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}


def test_breaker_stays_closed_just_under_the_error_rate(sandbox, clock, settings):
    settings.CIRCUIT_MIN_SAMPLES = 10
    settings.CIRCUIT_BREAKER_ERROR_RATE = 0.3
    run = create(clock, make_leads(12))
    worker = new_worker(clock, batch_size=1)
    # 2 failures in the last 10 requests = 0.2: closed; a 3rd failure in the window = 0.3: open.
    states = fault_sequence(worker, sandbox, clock, [None] * 6 + ["500", None, None, "500"])
    assert states == ["closed"] * 10
    assert fault_sequence(worker, sandbox, clock, ["500"]) == ["open"]
    settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)


def test_window_slides_old_failures_out(sandbox, clock, settings):
    """The rate is over the *last* N requests: failures that slid out of the window do not count."""
    settings.CIRCUIT_MIN_SAMPLES = 4
    settings.CIRCUIT_BREAKER_ERROR_RATE = 0.5
    run = create(clock, make_leads(10))
    worker = new_worker(clock, batch_size=1)
    # window after each: [F] [F,ok] [F,ok,ok] [F,ok,ok,ok]=.25 [ok,ok,ok,F]=.25 [ok,ok,F,F]=.5 -> open
    states = fault_sequence(worker, sandbox, clock, ["500", None, None, None, "500"])
    assert states == ["closed"] * 5
    assert fault_sequence(worker, sandbox, clock, ["500"]) == ["open"]
    settle(worker, clock, [run])
    assert_accounted(run, settings)


# --- 401 and 402: fail closed at once -------------------------------------------------------------


@pytest.mark.parametrize(("fault", "kind"), [("401", "auth"), ("402", "out_of_credits")])
def test_credential_faults_open_the_breaker_at_the_first_answer(fault, kind, sandbox, clock, settings):
    settings.CIRCUIT_PROBE_INTERVAL_S = 60
    sandbox.update_config(fault=fault)
    run = create(clock, make_leads(5))
    worker = new_worker(clock)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 1  # one request, not one per lead or per retry
    assert breaker(clock) == "open"  # at once: 1 sample, far under CIRCUIT_MIN_SAMPLES
    calls = ProviderCall.objects.filter(run_id=run.run_id)
    assert {(c.state, c.status_code, c.cost_cents) for c in calls} == {(CallState.ERRORED, int(fault), 0)}
    assert all(kind in c.error_text for c in calls)
    items = list(RunItem.objects.filter(run=run))
    assert {i.status for i in items} == {ItemStatus.QUEUED}  # waiting, not failed and not lost
    assert all(i.not_before >= clock() + dt.timedelta(seconds=59) for i in items)

    # A new run while the breaker is open sends nothing.
    other = create(clock, make_leads(3, prefix="G", street_word="Elm"), label="other")
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 1
    assert Run.objects.get(pk=other.pk).reason == "circuit_open"

    # Still refused at the next probe: one probe request, the breaker stays open.
    clock.advance(seconds=61)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 2
    assert breaker(clock) == "open"

    # The operator fixes the credentials: the next probe closes the breaker, everything finishes.
    sandbox.update_config(fault=None)
    settle(worker, clock, [run, other])
    assert breaker(clock) == "closed"
    for r in (run, other):
        assert_accounted(r, settings)
        assert set(RunItem.objects.filter(run=r).values_list("status", flat=True)) == {ItemStatus.DONE}
    assert_nothing_lost(sandbox)
    assert max(sandbox.stats.snapshot()["item_keys"].values()) <= 3  # 401, the failed probe, the answer


@pytest.mark.parametrize("fault", ["401", "402"])
def test_run_waiting_after_a_credential_fault_reads_paused(fault, sandbox, clock, api_client):
    sandbox.update_config(fault=fault)
    run = create(clock, make_leads(2))
    drain(new_worker(clock))
    assert breaker(clock) == "open"
    status = api_client.get(f"/api/skiptrace-runs/{run.run_id}/status").json()
    assert status["queued"] == 2
    assert status["state"] == "paused", status


def test_run_reads_running_again_once_the_breaker_closes(sandbox, clock, settings):
    settings.CIRCUIT_MIN_SAMPLES = 1
    settings.CIRCUIT_BREAKER_ERROR_RATE = 1.0
    run = create(clock, make_leads(4))
    worker = new_worker(clock, batch_size=1)
    assert fault_sequence(worker, sandbox, clock, ["500"]) == ["open"]
    drain(worker)
    assert Run.objects.get(pk=run.pk).state == "paused"
    clock.advance(seconds=61)
    assert worker.process_one_batch()  # the probe: succeeds, the breaker closes
    assert breaker(clock) == "closed"
    assert worker.process_one_batch()  # and the run goes on
    run.refresh_from_db()
    assert run.finished_at is None and run.queued > 0
    assert (run.state, run.reason) == ("running", None)


# --- 429 -----------------------------------------------------------------------------------------


def test_429_with_retry_after_waits_exactly_that_long(sandbox, clock, settings):
    sandbox.update_config(fault="429", retry_after=7)
    run = create(clock, make_leads(3))
    worker = new_worker(clock)
    start = clock()
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 1
    items = list(RunItem.objects.filter(run=run))
    assert {(i.status, i.attempt) for i in items} == {(ItemStatus.QUEUED, 0)}
    assert {i.not_before for i in items} == {start + dt.timedelta(seconds=7)}
    assert set(ProviderCall.objects.values_list("state", "status_code", "cost_cents")) == {(CallState.ERRORED, 429, 0)}
    assert breaker(clock) == "closed"  # one failure of 30 samples
    assert BreakerSample.objects.filter(failure=True).count() == 1

    sandbox.update_config(fault=None)
    clock.advance(seconds=6)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 1  # Retry-After is honoured: not a second early
    clock.advance(seconds=1)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 2
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}


def test_429_without_retry_after_backs_off_then_finishes(sandbox, clock, settings):
    sandbox.update_config(fault="429", retry_after=None)
    run = create(clock, make_leads(3))
    worker = new_worker(clock)
    start = clock()
    drain(worker)
    for item in RunItem.objects.filter(run=run):
        assert item.status == ItemStatus.QUEUED
        assert start + dt.timedelta(seconds=1) <= item.not_before <= start + dt.timedelta(seconds=300)
    drain(worker)
    assert sandbox.stats.snapshot()["requests"] == 1  # no hammering while the provider says slow down
    sandbox.update_config(fault=None)
    settle(worker, clock, [run], step_s=5)
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}


# --- transient answers: 500, 429 -----------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_fault_costs_nothing_and_the_leads_are_retried_after_backoff(fault, sandbox, clock, settings):
    sandbox.update_config(fault=fault)
    run = create(clock, make_leads(4))
    worker = new_worker(clock)
    drain(worker)
    calls = list(ProviderCall.objects.all())
    assert len(calls) == 4 and {(c.state, c.cost_cents) for c in calls} == {(CallState.ERRORED, 0)}
    assert not RunItem.objects.filter(run=run, status=ItemStatus.DONE).exists()  # never "no contacts"
    assert not RunItem.objects.filter(run=run, status=ItemStatus.FAILED).exists()
    sandbox.update_config(fault=None)
    settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}
    assert Counter(sandbox.stats.snapshot()["item_keys"].values()) == {2: 4}  # the error, then the answer


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_a_fault_that_never_clears_fails_items_with_the_reason_after_max_attempts(fault, sandbox, clock, settings):
    settings.SKIP_TRACE_MAX_ATTEMPTS = 3
    settings.CIRCUIT_MIN_SAMPLES = 1000  # the breaker is not what this test is about
    sandbox.update_config(fault=fault, retry_after=1)
    run = create(clock, make_leads(2))
    worker = new_worker(clock)
    for _ in range(6):
        drain(worker)
        clock.advance(seconds=61)
    run.refresh_from_db()
    if fault == "429":
        # A 429 is the provider asking us to slow down, not a failed lead: it waits (and the breaker
        # guards the fleet), it is not given up after SKIP_TRACE_MAX_ATTEMPTS.
        assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.QUEUED}
        sandbox.update_config(fault=None)
        settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)
    failed = list(RunItem.objects.filter(run=run, status=ItemStatus.FAILED))
    if fault != "429":
        assert len(failed) == 2
        assert all(i.last_error.startswith("provider_error:") and "after 3 attempts" in i.last_error for i in failed)
        assert ProviderCall.objects.filter(state=CallState.ERRORED).count() == 6
        assert run_report(run)["errors"][0]["reason"] == "provider_error"


# --- timeouts and resets: the answer is lost --------------------------------------------------------


@pytest.mark.parametrize("fault", LOST_FAULTS + UNREADABLE_FAULTS)
def test_lost_answer_is_billed_at_estimate_never_resent_by_itself_and_resent_once_by_resume(
        fault, sandbox, clock, settings, fast_timeout):
    state, reason = UNKNOWN_OUTCOME[fault]
    lost_key = "lost_calls" if state == CallState.LOST else "unreadable_calls"
    sandbox.update_config(fault=fault)
    leads = make_leads(3)
    run = create(clock, leads)
    worker = new_worker(clock)
    drain(worker)
    sandbox.update_config(fault=None)
    keys = sandbox.stats.snapshot()["item_keys"]
    assert len(keys) == 3 and set(keys.values()) == {1}
    calls = list(ProviderCall.objects.all())
    assert {(c.state, c.cost_cents) for c in calls} == {(state, settings.SKIP_TRACE_COST_PER_MATCH_CENTS)}
    report = assert_accounted(run, settings)
    assert report["totals"]["failed"] == 3 and report[lost_key] == 3
    assert report["totals"]["cost_usd"] * 100 == pytest.approx(3 * settings.SKIP_TRACE_COST_PER_MATCH_CENTS)
    assert guards.budget_spent_cents_today(clock()) == 3 * settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    assert {i.last_error.split(":")[0] for i in RunItem.objects.filter(run=run)} == {reason}

    # Not by itself: not by time passing, not by the reaper, not by a new run of the same leads.
    clock.advance(hours=2)
    drain(worker)
    again = create(clock, leads, label="again")
    drain(worker)
    assert sandbox.stats.snapshot()["item_keys"] == keys
    assert_accounted(again, settings)
    assert {i.last_error.split(":")[0] for i in RunItem.objects.filter(run=again)} == {"provider_outcome_unknown"}

    # An explicit resume sends each lead exactly once more.
    assert run_resume(run=run, override_budget=False, now=clock()) == 3
    settle(worker, clock, [run])
    assert Counter(sandbox.stats.snapshot()["item_keys"].values()) == {2: 3}
    report = assert_accounted(run, settings)
    assert report["totals"]["done"] == 3 and report[lost_key] == 3
    assert_nothing_lost(sandbox)
    spend = ProviderCall.objects.aggregate(s=Sum("cost_cents"))["s"]
    assert guards.budget_spent_cents_today(clock()) == spend  # lost calls stay in the day's spend
    # resuming again sends nothing: the items are done
    assert run_resume(run=run, override_budget=False, now=clock()) == 0
    drain(worker)
    assert Counter(sandbox.stats.snapshot()["item_keys"].values()) == {2: 3}


def test_timeout_counts_as_a_breaker_failure(sandbox, clock, settings, fast_timeout):
    settings.CIRCUIT_MIN_SAMPLES = 2
    settings.CIRCUIT_BREAKER_ERROR_RATE = 1.0
    run = create(clock, make_leads(4))
    worker = new_worker(clock, batch_size=1)
    assert fault_sequence(worker, sandbox, clock, ["timeout", "timeout"]) == ["closed", "open"]
    settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert_nothing_lost(sandbox)


# --- a random mix of errors ------------------------------------------------------------------------


def test_random_error_mix_loses_nothing_and_accounts_for_every_item_and_cent(sandbox, clock, settings):
    settings.CIRCUIT_MIN_SAMPLES = 10
    settings.CIRCUIT_BREAKER_ERROR_RATE = 0.3
    settings.SKIP_TRACE_MAX_ATTEMPTS = 2  # some leads give up: they must fail with the reason
    sandbox.update_config(error_rate=0.5, seed=11)
    runs = [create(clock, make_leads(40, prefix=f"M{n}", street_word=w), label=f"mix{n}") for n, w in enumerate(["Oak", "Elm"])]
    # The second run shares 20 leads with the first: they must still be sent at most once per success.
    runs.append(create(clock, make_leads(20, prefix="M0", street_word="Oak"), label="mix-dup"))
    worker = new_worker(clock, batch_size=4)
    statuses = [500, 502, 503, 429]
    opened = 0
    last_sample = 0
    passes = 0
    for _step in range(MAX_STEPS):
        state_before = breaker(clock)
        if not worker.process_one_batch():
            if all(Run.objects.get(pk=r.pk).finished_at is not None for r in runs):
                break
            clock.advance(seconds=61)
            passes += 1
            # a new pass, another error status (update_config also re-seeds the error draws);
            # after 8 passes the fault clears
            sandbox.update_config(error_status=statuses[passes % len(statuses)],
                                  error_rate=0.5 if passes < 8 else 0.0)
            continue
        newest = BreakerSample.objects.order_by("-id").first()
        if newest is None or newest.id == last_sample:
            continue  # no provider request in this batch (cache, breaker, waiting)
        last_sample = newest.id
        window = list(BreakerSample.objects.order_by("-id").values_list("failure", flat=True)[:10])
        rate = sum(window) / len(window)
        state = breaker(clock)
        if state_before == "closed" and state == "open":
            opened += 1
            assert newest.failure and len(window) == 10 and rate >= 0.3, window
        if state_before == "closed" and newest.failure and state == "closed":
            assert len(window) < 10 or rate < 0.3, window
    else:
        raise AssertionError("the mix never finished")
    assert opened >= 1  # a 50 % error rate over 10-request windows does open the breaker
    assert ProviderCall.objects.filter(state=CallState.ERRORED).count() >= 10
    assert RunItem.objects.filter(status=ItemStatus.FAILED).exists()  # some leads gave up: with a reason
    for r in runs:
        assert_accounted(r, settings)
    assert_nothing_lost(sandbox)
    # at most one answered (billable) call per lead, whatever the retries
    completed = Counter(ProviderCall.objects.filter(state=CallState.COMPLETED).values_list("signature", flat=True))
    assert completed and max(completed.values()) == 1
    for sig in set(RunItem.objects.values_list("signature", flat=True)):
        sig_items = RunItem.objects.filter(signature=sig)
        for item in sig_items:  # answered, or given up after SKIP_TRACE_MAX_ATTEMPTS errors with the reason
            if item.status == ItemStatus.DONE:
                assert item.provider_call.state == CallState.COMPLETED and sig in completed
            else:
                assert item.last_error.startswith("provider_error") and "after 2 attempts" in item.last_error
    assert guards.budget_spent_cents_today(clock()) == ProviderCall.objects.aggregate(s=Sum("cost_cents"))["s"]


# --- our own database fails right after a paid answer came back ----------------------------------


def _fail_once(monkeypatch, module, name: str) -> dict:
    """Make ``module.name`` raise "database is locked" on its first call (a busy SQLite file, a
    PostgreSQL connection blip), then behave."""
    from django.db import OperationalError

    real = getattr(module, name)
    seen = {"n": 0}

    def flaky(*args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 1:
            raise OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return seen


def _work_like_the_worker_loop(worker: Worker) -> None:
    """What ``Worker._loop`` does with a batch that raises: log it, let the lease run out."""
    try:
        worker.process_one_batch()
    except Exception:  # noqa: BLE001 - exactly the worker's own catch-all
        pass


@pytest.mark.parametrize("target", ["breaker_record", "record_answer"])
def test_a_database_error_after_a_paid_answer_does_not_throw_the_answer_away(
        target, sandbox, clock, settings, monkeypatch):
    from skiptrace import money as service
    from skiptrace.money import record

    _fail_once(monkeypatch, guards if target == "breaker_record" else record, target)
    run = create(clock, make_leads(3))
    worker = new_worker(clock)
    _work_like_the_worker_loop(worker)
    assert sandbox.stats.snapshot()["requests"] == 1  # the provider answered (and billed) once
    clock.advance(seconds=service.lease_seconds() + 1)
    worker.housekeeping(force=True)
    settle(worker, clock, [run])
    assert_accounted(run, settings)
    assert max(sandbox.stats.snapshot()["item_keys"].values()) == 1
    assert not ProviderCall.objects.filter(state=CallState.LOST).exists()
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}


def create(clock, leads_: list[LeadInput], label: str = "faults") -> Run:
    return fakes.create(clock, leads_, label)
