"""Budget, circuit breaker, rate limit and concurrency gate: each holds for the whole fleet."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import responses
from django.db import connections

from skiptrace import guards
from skiptrace.guards import rate
from skiptrace.models import CallState, GuardState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.runs import run_create, run_resume
from skiptrace.service import Policy
from skiptrace.worker import Worker
from tests.e2e.test_worker import leads, start_worker, subprocess_env
from tests.helpers import densest_window, provider_send_times
from tests.money.test_service import URL, FakeBatchData, create, items, lead, work

pytestmark = pytest.mark.django_db


# --- budget --------------------------------------------------------------------------------------


def test_budget_smaller_than_one_match_pauses_before_any_call_and_override_resumes(provider, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 10
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 25
    run = create(lead("A-1"), lead("B-1", street="12 Elm St"))
    work()
    assert provider.items == []  # worst case $0.25 does not fit $0.10: nothing leaves
    run.refresh_from_db()
    assert run.soft_paused and run.reason == "daily_budget" and run.state == "paused"
    assert {i.status for i in items(run)} == {ItemStatus.QUEUED}

    run_resume(run=run, override_budget=True)
    work()
    run.refresh_from_db()
    assert len(provider.items) == 2 and run.state == "finished"
    assert run.cost_cents == 50  # the override is explicit: this run may pass the cap


def test_budget_cuts_a_batch_to_what_fits_and_pauses_the_rest(provider, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 30
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    run = run_create(source_label="t", leads=leads(10), policy=Policy()).run
    work()
    assert len(provider.items) == 4  # 4 x 7 = 28 <= 30; a fifth would be 35
    run.refresh_from_db()
    assert run.state == "paused" and run.done == 4 and run.queued == 6
    assert guards.budget_spent_cents_today() <= 30


def test_new_budget_day_resumes_paused_runs_by_itself(provider, settings, clock):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 7
    run = create(lead("A-1"), lead("B-1", street="12 Elm St"), now=clock())
    work(clock)
    run.refresh_from_db()
    assert run.state == "paused" and len(provider.items) == 1
    clock.advance(days=1)
    worker = Worker(concurrency=1, clock=clock)
    worker.housekeeping(force=True)
    while worker.process_one_batch():
        pass
    run.refresh_from_db()
    assert run.state == "finished" and len(provider.items) == 2


def test_budget_counts_open_calls_at_their_estimate(provider, settings, clock):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 14
    ProviderCall.objects.create(
        provider="batchdata", idempotency_key="x" * 64, lead_id="Z", request_json="{}", signature="s" * 64,
        batch_id="other", budget_day=guards.budget_day(clock()), estimate_cents=7, state=CallState.SENT,
    )
    assert guards.budget_fit(5, now=clock()) == 1


@pytest.mark.django_db(transaction=True)
def test_spend_never_passes_the_cap_with_six_batches_in_flight(sandbox, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 100
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    sandbox.update_config(latency_s=0.2, match_rate=1.0)
    run = run_create(source_label="t", leads=leads(60), policy=Policy()).run
    peak = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak.append(guards.budget_spent_cents_today())
            time.sleep(0.01)
        connections.close_all()

    watcher = threading.Thread(target=watch)
    watcher.start()
    Worker(concurrency=6, batch_size=3).run(exit_when_idle=True)
    stop.set()
    watcher.join()
    run.refresh_from_db()
    assert max(peak) <= 100
    assert run.cost_cents == 98 and run.done == 14 and run.state == "paused"  # 14 x 7 = 98
    assert sandbox.stats.snapshot()["items"] == 14


# --- circuit breaker -----------------------------------------------------------------------------


def test_ten_failures_out_of_twenty_open_the_breaker(settings, clock):
    settings.CIRCUIT_MIN_SAMPLES = 20
    for n in range(20):
        state = guards.breaker_record(ok=n % 2 == 0, now=clock(), kind="ok" if n % 2 == 0 else "http_5xx")
    assert state == "open"
    assert guards.breaker_state(clock()) == "open"
    assert guards.provider_status() == "circuit_open"


def test_breaker_stays_closed_below_min_samples_and_below_the_rate(settings, clock):
    settings.CIRCUIT_MIN_SAMPLES = 20
    for _ in range(19):
        guards.breaker_record(ok=False, now=clock(), kind="http_5xx")
    assert guards.breaker_state(clock()) == "closed"  # 19 samples < 20
    guards.breaker_reset()
    for n in range(20):
        guards.breaker_record(ok=n % 4 != 0, now=clock(), kind="ok" if n % 4 else "timeout")
    assert guards.breaker_state(clock()) == "closed"  # 25 % < 30 %


def test_a_no_match_is_not_an_error(settings, clock):
    settings.CIRCUIT_MIN_SAMPLES = 5
    for _ in range(10):
        guards.breaker_record(ok=True, now=clock(), kind="ok")
    assert guards.breaker_state(clock()) == "closed"


def test_auth_failure_opens_the_breaker_at_once(clock):
    assert guards.breaker_record(ok=False, now=clock(), kind="auth") == "open"


def test_half_open_lets_one_probe_per_interval_and_success_closes(settings, clock, caplog):
    settings.CIRCUIT_PROBE_INTERVAL_S = 60
    caplog.set_level(logging.WARNING, logger="convexa.guards")
    guards.breaker_record(ok=False, now=clock(), kind="auth")
    assert not guards.breaker_check(clock()).allowed
    clock.advance(seconds=59)
    assert not guards.breaker_check(clock()).allowed
    clock.advance(seconds=1)
    decisions = [guards.breaker_check(clock()) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, False, False, False, False]
    assert decisions[0].probe
    guards.breaker_record(ok=False, now=clock(), kind="http_5xx")  # the probe failed: stays open
    clock.advance(seconds=30)
    assert not guards.breaker_check(clock()).allowed
    clock.advance(seconds=30)
    assert guards.breaker_check(clock()).allowed
    guards.breaker_record(ok=True, now=clock(), kind="ok")
    assert guards.breaker_state(clock()) == "closed"
    log = [r.getMessage() for r in caplog.records]
    assert sum("probe request allowed" in m for m in log) == 2
    assert any("circuit opened" in m for m in log) and any("circuit closed" in m for m in log)


def test_open_breaker_keeps_items_queued_with_reason_circuit_open(provider, clock):
    GuardState.objects.create(name="breaker", state="open", next_probe_at=clock.advance(seconds=0) + __import__("datetime").timedelta(seconds=60))
    run = create(lead("A-1"), now=clock())
    work(clock)
    run.refresh_from_db()
    assert provider.items == []
    assert run.reason == "circuit_open" and run.state == "paused"
    assert items(run)[0].status == ItemStatus.QUEUED


def test_provider_errors_through_the_worker_open_the_breaker(settings, clock):
    settings.CIRCUIT_MIN_SAMPLES = 4
    settings.SKIP_TRACE_BATCH_SIZE = 1
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500, json={"status": {"code": 500, "text": "down"}})
        run_create(source_label="t", leads=leads(6), policy=Policy(), now=clock())
        work(clock)
        assert len(mock.calls) == 4  # the 4th failure opens it; the rest wait
    assert guards.breaker_state(clock()) == "open"
    assert Run.objects.get().reason == "circuit_open"


# --- rate limit and concurrency, fleet-wide --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_worker_processes_never_exceed_rps_or_concurrency(sandbox, tmp_path):
    sandbox.update_config(latency_s=0.3)
    run_create(source_label="t", leads=leads(30), policy=Policy())
    env = subprocess_env(sandbox.url, tmp_path, SKIP_TRACE_RPS="4", SKIP_TRACE_CONCURRENCY="2", SKIP_TRACE_BATCH_SIZE="1",
                         LOG_LEVEL="info")
    # Two threads per process: more than the slots, so the gate is what holds them back.
    procs = [start_worker(env, "--exit-when-idle", "--concurrency", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stats = sandbox.stats.snapshot()
    assert stats["requests"] == 30
    # Sent: never more than RPS in any 1 s across both processes (the limiter's guarantee).
    sends = provider_send_times(outputs)
    assert len(sends) == 30 and len(densest_window(sends)) <= 4, densest_window(sends)
    # Arrived: the sandbox's clock shares this host and process, so it may bunch arrivals a little.
    assert len(densest_window(stats["request_times"])) <= 5, (densest_window(stats["request_times"]), densest_window(sends))
    assert stats["max_concurrent"] <= 2
    assert RunItem.objects.filter(status=ItemStatus.DONE).count() == 30


# --- a rate permit is used at once ----------------------------------------------------------------


def permit(*, asked_ago: float, entry_in_ms: float | None = None, ahead_ms: int = 0) -> None:
    """Set this thread's last permit: asked ``asked_ago`` s ago, its window entry ``entry_in_ms``
    from now on the server's clock (None: a SQLite permit, no entry time)."""
    rate.last_permit.asked_at = time.monotonic() - asked_ago
    rate.last_permit.granted_at = time.monotonic()
    rate.last_permit.entry_ms = None if entry_in_ms is None else 1000 * time.monotonic() + OFFSET_MS + entry_in_ms
    rate.last_permit.ahead_ms = ahead_ms


OFFSET_MS = 123_456_789.0  # the server's clock against this host's monotonic one, in these tests


@pytest.fixture
def server_clock_known(monkeypatch):
    """The server's clock known to within 4 ms (as if the database were 2 ms away each way)."""
    offset = rate.ServerOffset()
    now = time.monotonic()
    offset.sample(now - 0.004, now, 1000 * (now - 0.002) + OFFSET_MS)
    monkeypatch.setattr(rate, "server_offset", offset)
    return offset


def test_a_permit_gone_stale_before_the_post_is_replaced_and_a_fresh_one_is_used(monkeypatch):
    asked: list[float] = []

    def fake_acquire(timeout_s: float = 60.0) -> bool:
        asked.append(time.monotonic())
        permit(asked_ago=0)
        return True

    monkeypatch.setattr(rate, "rate_acquire", fake_acquire)
    permit(asked_ago=0)
    guards.rate_permit_fresh()
    assert asked == []  # granted just now: the request goes on it
    permit(asked_ago=0.07)  # the thread was not scheduled for 70 ms
    guards.rate_permit_fresh()
    assert len(asked) == 1 and time.monotonic() - rate.last_permit.asked_at < guards.PERMIT_MAX_AGE_S


def test_permits_that_keep_coming_late_are_replaced_a_bounded_number_of_times_and_it_is_said(monkeypatch, caplog):
    asked: list[float] = []

    def slow_acquire(timeout_s: float = 60.0) -> bool:  # every permit is granted 40 ms after the ask
        asked.append(time.monotonic())
        permit(asked_ago=0.04)
        return True

    monkeypatch.setattr(rate, "rate_acquire", slow_acquire)
    monkeypatch.setattr(rate, "_late_warned_at", -1e9)
    permit(asked_ago=0.04)
    with caplog.at_level(logging.WARNING, logger="convexa.guards"):
        guards.rate_permit_fresh()
        assert len(asked) == guards.PERMIT_REFRESHES  # then the request goes: never stuck
        guards.rate_permit_fresh()  # again within the minute: no second warning
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "still late after 3 fresh ones" in warning and "within ~10 ms" in warning


def test_a_post_dated_permit_waits_for_its_time_on_the_servers_clock_and_is_used(monkeypatch, server_clock_known):
    monkeypatch.setattr(rate, "rate_acquire", lambda timeout_s=60.0: pytest.fail("the permit was good"))
    slept: list[float] = []
    # Asked 40 ms ago (too old by its ask), its entry 30 ms ahead of the server's clock.
    permit(asked_ago=0.04, entry_in_ms=30, ahead_ms=50)
    guards.rate_permit_fresh(sleep=lambda s: (slept.append(s), time.sleep(s)))
    low, high = server_clock_known.bounds()
    # It waited until the server's clock surely reads the entry's time, then went.
    assert slept and 0.030 <= slept[0] <= 0.036
    assert 1000 * time.monotonic() + low >= rate.last_permit.entry_ms


def test_a_post_dated_permit_is_replaced_once_its_time_plus_the_max_age_has_surely_passed(monkeypatch,
                                                                                           server_clock_known):
    asked: list[float] = []

    def fake_acquire(timeout_s: float = 60.0) -> bool:
        asked.append(time.monotonic())
        permit(asked_ago=0, entry_in_ms=10, ahead_ms=50)
        return True

    monkeypatch.setattr(rate, "rate_acquire", fake_acquire)
    # Its entry was 24 ms ago: within 25 ms by this host's clock, but the server's clock is only
    # known to within 2 ms either way, and it may already read 26 ms past: replaced.
    permit(asked_ago=0.07, entry_in_ms=-24, ahead_ms=50)
    guards.rate_permit_fresh(sleep=time.sleep)
    assert len(asked) == 1
    # A post-dated permit never goes by its ask's age: without bounds on the server's clock it is replaced.
    server_clock_known.reset()
    permit(asked_ago=0, entry_in_ms=10, ahead_ms=50)
    monkeypatch.setattr(rate, "rate_acquire", lambda timeout_s=60.0: asked.append(0) or True)
    guards.rate_permit_fresh()
    assert len(asked) == 1 + guards.PERMIT_REFRESHES


def test_the_servers_clock_is_bounded_by_every_ask_and_a_stepped_clock_starts_again():
    offset = rate.ServerOffset()
    assert offset.bounds() is None and not offset.usable()
    offset.sample(10.000, 10.030, 5_000.0 + 10_015.0)  # 30 ms round trip: offset in [4985, 5015]
    assert offset.bounds() == (4985.0, 5015.0) and not offset.usable()  # 30 ms apart: too wide to post-date
    offset.sample(11.000, 11.004, 5_000.0 + 11_003.0)  # 4 ms round trip: [4999, 5003]
    assert offset.bounds() == (4999.0, 5003.0) and offset.usable()
    offset.sample(12.000, 12.004, 9_000.0 + 12_002.0)  # the server's clock jumped 4 s
    assert offset.bounds() is None  # the samples disagree: no bounds ...
    assert offset.bounds() == (8998.0, 9002.0)  # ... until the newest alone
    # Only the last KEEP_S seconds count: a tight sample ages out, later ones bound alone.
    offset.sample(12.500, 12.501, 9_000.0 + 12_500.5)  # 1 ms round trip: [8999.5, 9000.5]
    assert offset.bounds() == (8999.5, 9000.5)
    offset.sample(30.000, 30.006, 9_000.0 + 30_003.0)  # 18 s later, 6 ms round trip
    assert offset.bounds() == (8997.0, 9003.0)


def test_a_limiter_failure_while_refreshing_never_stops_a_request_whose_calls_are_sent(monkeypatch, caplog):
    def broken(timeout_s: float = 60.0) -> bool:
        raise RuntimeError("bucket unavailable")

    monkeypatch.setattr(rate, "rate_acquire", broken)
    permit(asked_ago=1)
    with caplog.at_level(logging.WARNING, logger="convexa.guards"):
        guards.rate_permit_fresh()  # does not raise
    assert [r.levelno for r in caplog.records if r.name == "convexa.guards"] == [logging.WARNING]


def test_the_client_checks_the_permit_after_building_the_body_and_just_before_the_post():
    from skiptrace.provider import BatchDataClient, TraceRequest

    fake = FakeBatchData()
    events: list[str] = []

    def answer(request):
        events.append("post")
        return fake(request)

    client = BatchDataClient(base_url="http://127.0.0.1:9", path="/api/v1/property/skip-trace", token="t" * 40, timeout=5)
    request = TraceRequest(request_id="r1", street="1 OAK ST", city="TAMPA", state="FL", zip="33610",
                           first="PAT", last="OWNER")
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=answer)
        client.skip_trace([request], before_send=lambda: events.append("permit checked"))
    assert events == ["permit checked", "post"]
