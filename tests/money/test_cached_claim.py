"""The cached claim (``money.cached_claim``): a re-upload of leads already paid for is served in bulk
statements, and every item it cannot surely serve goes the full way, with the same result."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import Lead, Phone
from skiptrace import money
from skiptrace import worker as worker_mod
from skiptrace.models import AttemptReason, CacheEntry, ItemStatus, Run, RunItem
from skiptrace.money import Policy, sweep
from skiptrace.worker import Worker
from tests.money.test_service import create, lead, work

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_hints():
    sweep.HINTS.clear()
    money.L1.clear()  # the cached claim reads L2 only; so does a fresh worker
    yield
    sweep.HINTS.clear()


def _plain(prefix: str, n: int, start: int = 0):
    return [lead(f"{prefix}{i}", street=f"{100 + i} Oak Hollow Dr") for i in range(start, start + n)]


def _cached_claim(**kw) -> money.Swept:
    return money.cached_claim(now=timezone.now(), worker_id="test", **kw)


def test_a_reupload_is_served_in_bulk_with_its_contacts_kept_and_nothing_paid(provider):
    create(*_plain("A", 40))
    work(batch_size=20)
    paid = len(provider.bodies)
    phones_before = dict(Phone.objects.values_list("id", "lead_id"))
    calls = dict(Lead.objects.values_list("lead_id", "provider_call_id"))
    CacheEntry.objects.update(last_seen=None)
    rerun = create(*_plain("A", 40))

    with CaptureQueriesContext(connection) as ctx:
        swept = _cached_claim(limit=100)
    assert (swept.window, swept.served, swept.items) == (40, 40, [])
    assert len(ctx.captured_queries) <= 12  # bulk statements, not a query per item
    money.runs_refresh(swept.run_ids, now=timezone.now())

    assert len(provider.bodies) == paid  # not one more request
    done = RunItem.objects.filter(run=rerun)
    assert set(done.values_list("status", "cached", "stale")) == {(ItemStatus.DONE, True, False)}
    assert {i.lead_id: i.provider_call_id for i in done} == calls  # each item names the call that answered it
    assert set(Lead.objects.values_list("run_id", "cached")) == {(rerun.run_id, True)}
    assert dict(Phone.objects.values_list("id", "lead_id")) == phones_before  # the same rows, untouched
    rerun.refresh_from_db()
    assert (rerun.done, rerun.cache_hits, rerun.provider_served, rerun.state) == (40, 40, 0, "finished")
    assert CacheEntry.objects.filter(last_seen__isnull=True).count() == 0


def test_what_the_cache_cannot_surely_serve_is_claimed_and_ends_as_the_full_path_ends_it(provider):
    provider.behaviour = {"APT": "empty"}  # a unit's answer is empty; the same street without it matches
    create(*_plain("A", 5), lead("U1", street="12 Elm St Apt 4"), lead("V1", street="14 Elm St Apt 5"))
    work(batch_size=50)
    assert RunItem.objects.filter(attempt_reason=AttemptReason.ADDRESS_SANITIZED).count() == 2
    paid = len(provider.bodies)
    provider.behaviour = {}  # were anything sent again, it would now match
    # the same five, the same two units, and two new leads at addresses already paid for
    rerun = create(*_plain("A", 5), lead("U1", street="12 Elm St Apt 4"), lead("V1", street="14 Elm St Apt 5"),
                   lead("N0", street="100 Oak Hollow Dr"), lead("N1", street="101 Oak Hollow Dr"))

    swept = _cached_claim(limit=100)
    assert swept.window == 9 and swept.served == 5
    assert sorted(i.lead_id for i in swept.items) == ["N0", "N1", "U1", "V1"]
    assert all(i.status == ItemStatus.IN_FLIGHT and i.lease_until for i in swept.items)
    outcome = money.batch_process(swept.items, client=Worker(concurrency=1).client, worker_id="test")
    work(batch_size=50)  # the units' sanitized retries

    assert len(provider.bodies) == paid  # everything came from the caches
    assert outcome.cached == 4
    items = {i.lead_id: i for i in RunItem.objects.filter(run=rerun, status=ItemStatus.DONE)}
    assert len(items) == 9 and all(i.cached for i in items.values())
    for unit in ("U1", "V1"):  # the empty answer sent it on to its retry, which the cache answered
        assert items[unit].attempt_reason == AttemptReason.ADDRESS_SANITIZED
        assert Phone.objects.filter(lead_id=unit).count() == 1
    for new, old in (("N0", "A0"), ("N1", "A1")):  # a new lead got its own copy of the contacts
        assert items[new].provider_call_id == items[old].provider_call_id
        assert list(Phone.objects.filter(lead_id=new).values_list("number")) == list(
            Phone.objects.filter(lead_id=old).values_list("number"))


def test_a_forced_run_is_not_served_from_answers_older_than_itself(provider):
    create(*_plain("A", 3))
    work()
    forced = create(*_plain("A", 3), policy=Policy(force=True))
    swept = _cached_claim(limit=100)
    assert swept.served == 0 and len(swept.items) == 3
    money.batch_process(swept.items, client=Worker(concurrency=1).client, worker_id="test")
    assert len(provider.items) == 6
    assert set(RunItem.objects.filter(run=forced).values_list("status", "cached")) == {(ItemStatus.DONE, False)}


def test_a_failure_inside_the_cached_claim_leaves_every_item_queued(provider):
    create(*_plain("A", 30))
    work()
    rerun = create(*_plain("A", 30))

    def lost_at_the_leads(execute, sql, params, many, context):  # the items are written before the leads
        if 'UPDATE "leads"' in sql:
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(lost_at_the_leads), pytest.raises(OperationalError):
        _cached_claim(limit=100)
    assert set(RunItem.objects.filter(run=rerun).values_list("status", flat=True)) == {ItemStatus.QUEUED}
    assert not Lead.objects.filter(run_id=rerun.run_id).exists()
    assert _cached_claim(limit=100).served == 30  # and the next one, from the queue's start, serves them


def test_windows_move_along_the_queue_and_come_back_for_items_put_back_below(provider):
    create(*_plain("A", 50))
    work()
    rerun = create(*_plain("A", 50))
    first = list(RunItem.objects.filter(run=rerun).order_by("id")[:5])
    a = _cached_claim(limit=20)
    b = _cached_claim(limit=20)
    assert a.served == b.served == 20
    assert RunItem.objects.filter(run=rerun, status=ItemStatus.DONE).count() == 40
    RunItem.objects.filter(id__in=[i.id for i in first]).update(status=ItemStatus.QUEUED, cached=False)  # put back
    c = _cached_claim(limit=20)  # the queue's last 10: a short window, the next starts over
    d = _cached_claim(limit=20)
    assert c.served == 10 and d.served == 5
    assert set(RunItem.objects.filter(run=rerun).values_list("status", flat=True)) == {ItemStatus.DONE}


def test_a_worker_reuploading_a_big_list_switches_to_cached_claims_and_finishes_it(provider, monkeypatch):
    create(*_plain("A", 300))
    work(batch_size=50)
    paid = len(provider.bodies)
    rerun = create(*_plain("A", 300))
    monkeypatch.setattr(worker_mod, "CACHED_CLAIM_MAX", 100)
    seen: list[tuple[int, int]] = []
    real = money.cached_claim

    def counting(**kw):
        got = real(**kw)
        seen.append((got.window, got.served))
        return got

    monkeypatch.setattr(worker_mod.money, "cached_claim", counting)
    worker = Worker(concurrency=1, batch_size=50, idle_sleep_s=0)
    worker.sweep_window = 80
    while worker.process_one_batch():
        pass
    assert len(provider.bodies) == paid
    # one claim of 50, all cached, grows the next to 100 (the maximum): cached claims from there on
    assert [window for window, _ in seen] == [80, 80, 80, 10, 0]
    assert all(served == window for window, served in seen)
    rerun.refresh_from_db()
    assert (rerun.state, rerun.done, rerun.cache_hits) == ("finished", 300, 300)


@pytest.mark.django_db(transaction=True)
def test_concurrent_cached_claims_never_take_an_item_twice(provider):
    create(*_plain("A", 120))
    work()
    rerun = create(*_plain("A", 120))
    Lead.objects.filter(lead_id__in=[f"A{i}" for i in range(0, 120, 3)]).update(provider_call=None)  # a third goes the full way
    served: list[int] = []
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def loop() -> None:
        try:
            while True:
                got = money.cached_claim(limit=15, now=timezone.now(), worker_id=threading.current_thread().name)
                if not got.window:
                    return
                with lock:
                    served.append(got.served)
                    claimed.extend(i.id for i in got.items)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=loop, name=f"w{n}") for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(claimed) == len(set(claimed)) == 40
    assert sum(served) == 80
    statuses = dict(RunItem.objects.filter(run=rerun).values_list("id", "status"))
    assert {statuses[i] for i in claimed} == {ItemStatus.IN_FLIGHT}
    assert sum(1 for s in statuses.values() if s == ItemStatus.DONE) == 80
    assert Run.objects.get(pk=rerun.pk).finished_at is None


def test_after_an_idle_wait_one_thread_looks_with_a_cached_claim_and_the_others_follow_its_verdict(
        provider, monkeypatch):
    create(*_plain("A", 300))
    work(batch_size=50)
    paid = len(provider.bodies)
    rerun = create(*_plain("A", 300))
    limits: list[int] = []
    real = money.cached_claim

    def counting(**kw):
        limits.append(kw["limit"])
        return real(**kw)

    monkeypatch.setattr(worker_mod.money, "cached_claim", counting)
    worker = Worker(concurrency=2, batch_size=50, idle_sleep_s=0)
    worker.sweep_window = 80
    thread = [1]
    monkeypatch.setattr(worker_mod.threading, "get_ident", lambda: thread[0])
    woken_at = worker._probe_gen
    worker._after_idle.update({1: woken_at, 2: woken_at})  # two threads went idle, then work came
    assert worker.process_one_batch()  # thread 1: the look, one batch
    thread[0] = 2
    assert worker.process_one_batch()  # thread 2: the verdict was "cached": a window
    assert limits == [50, 80]
    while worker.process_one_batch():
        pass
    assert len(provider.bodies) == paid
    rerun.refresh_from_db()
    assert (rerun.state, rerun.cache_hits) == ("finished", 300)

    # new leads: the look finds nothing cached, sends its batch, and the next claims are plain claims
    fresh = create(*_plain("N", 120, start=1000))
    limits.clear()
    worker._after_idle.update({1: worker._probe_gen, 2: worker._probe_gen})
    thread[0] = 1
    assert worker.process_one_batch()
    thread[0] = 2
    assert worker.process_one_batch()
    assert limits == [50]  # thread 2 made a plain claim
    while worker.process_one_batch():
        pass
    assert len(provider.items) == 300 + 120
    fresh.refresh_from_db()
    assert (fresh.state, fresh.cache_hits) == ("finished", 0)
