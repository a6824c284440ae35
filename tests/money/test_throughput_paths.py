"""The paths that keep a worker fast at BatchData's real limits, proved by what a user would see:
big claims while the caches answer (and one provider batch when they do not), one claim per run
queue in id order past a paused run, idle threads that leave the database alone, one limiter
poller per process, and bulk statements that keep row-by-row semantics."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from skiptrace import worker as worker_mod
from skiptrace.bulk import insert_rows, update_rows
from skiptrace.guards import rate
from skiptrace.models import GuardState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.money.claim import items_claim
from skiptrace.worker import Worker
from tests.money.test_service import create, lead, work

pytestmark = pytest.mark.django_db


def _leads(prefix: str, n: int):
    """``n`` leads with addresses of their own (a prefix is a street)."""
    streets = {"A": "Oak Hollow Dr", "B": "Birch Bend Rd", "N": "Nettle Ln", "P": "Pine Ct", "O": "Olive St",
               "W": "Willow Way", "C": "Cedar Ave", "I": "Ivy Pl", "X": "Elm St", "R": "Rowan Dr"}
    return [lead(f"{prefix}{i}", street=f"{100 + i} {streets[prefix]}") for i in range(n)]


# --- claims grow while the caches answer --------------------------------------------------------------


def test_a_mostly_cached_rerun_is_claimed_in_growing_claims(provider):
    first = create(*_leads("A", 450))
    work(batch_size=50)
    assert len(provider.bodies) == 9 and RunItem.objects.filter(run=first, status=ItemStatus.DONE).count() == 450
    # the same list with one lead in 25 new: each claim is mostly, never all, cached
    rerun = create(*[lead(f"A{i}", street=f"{100 + i} Oak Hollow Dr") if i % 25 else
                     lead(f"M{i}", street=f"{100 + i} Maple Way") for i in range(450)])
    claims: list[int] = []
    real = worker_mod.money.items_claim

    def counting(**kw):
        got = real(**kw)
        claims.append(len(got))
        return got

    worker = Worker(concurrency=1, batch_size=50, idle_sleep_s=0)
    worker_mod.money.items_claim = counting
    try:
        while worker.process_one_batch():
            pass
    finally:
        worker_mod.money.items_claim = real
    assert len(provider.items) == 450 + 18  # the new leads, each once
    assert RunItem.objects.filter(run=rerun, status=ItemStatus.DONE, cached=True).count() == 450 - 18
    assert claims[:4] == [50, 100, 200, 100]  # doubling (the last one takes what is left)
    assert len(claims) < 450 / 50


def test_a_big_claim_the_caches_cannot_serve_sends_one_batch_and_puts_the_rest_back(provider):
    create(*_leads("B", 100))
    work(batch_size=100)
    assert len(provider.bodies) == 1
    mixed = create(*_leads("B", 100), *_leads("N", 300))  # 100 cached, then 300 never seen
    worker = Worker(concurrency=1, batch_size=100, idle_sleep_s=0)
    worker._claim_size = 400  # as after cached claims
    assert worker.process_one_batch()
    assert len(provider.bodies) == 2 and len(provider.bodies[-1]["requests"]) == 100  # one batch, no bigger
    assert RunItem.objects.filter(run=mixed, status=ItemStatus.DONE).count() == 200
    back = RunItem.objects.filter(run=mixed, status=ItemStatus.QUEUED)
    assert back.count() == 200 and not back.filter(provider_call__isnull=False).exists()  # untouched
    assert worker._claim_size == 100  # the next claim is one batch
    while worker.process_one_batch():
        pass
    sent = [r["propertyAddress"]["street"] for body in provider.bodies for r in body["requests"]]
    assert len(sent) == len(set(sent)) == 400  # every input sent once
    assert RunItem.objects.filter(run=mixed, status=ItemStatus.DONE).count() == 400


# --- the claim ------------------------------------------------------------------------------------


def test_the_claim_takes_the_oldest_items_of_runs_that_may_go_past_a_paused_runs_queue(provider):
    paused = create(*_leads("P", 30))
    Run.objects.filter(run_id=paused.run_id).update(paused_by_operator=True)
    older = create(*_leads("O", 5))
    newer = create(*_leads("W", 5))
    got = sorted(items_claim(limit=7, now=timezone.now(), worker_id="t"), key=lambda i: i.id)
    assert [i.run_id for i in got] == [older.run_id] * 5 + [newer.run_id] * 2
    assert [i.position for i in got[:5]] == [0, 1, 2, 3, 4]
    assert not RunItem.objects.filter(run=paused).exclude(status=ItemStatus.QUEUED).exists()
    assert all(i.status == ItemStatus.IN_FLIGHT and i.worker_id == "t" for i in got)
    assert items_claim(limit=7, now=timezone.now(), worker_id="t", run_id=newer.run_id)[0].position == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_claims_never_take_an_item_twice():
    create(*_leads("C", 400))
    taken: list[list[int]] = []
    errors: list[BaseException] = []

    def claim() -> None:
        try:
            mine: list[int] = []
            while got := items_claim(limit=25, now=timezone.now(), worker_id=threading.current_thread().name):
                mine += [i.id for i in got]
            taken.append(mine)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, name=f"c{n}") for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    ids = [i for mine in taken for i in mine]
    assert len(ids) == len(set(ids)) == 400


# --- idle threads ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_idle_threads_leave_the_database_alone_but_new_work_is_taken_at_once(provider, monkeypatch):
    claims: list[float] = []
    real = worker_mod.money.items_claim

    def counting(**kw):
        claims.append(time.monotonic())
        return real(**kw)

    monkeypatch.setattr(worker_mod.money, "items_claim", counting)
    worker = Worker(concurrency=16, batch_size=10, idle_sleep_s=0.1)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)  # everyone has made a first claim and gone idle
        before = len(claims)
        time.sleep(1.0)
        idle_claims = len(claims) - before
        # one poller every 0.1 s (about 10); 16 threads each polling would make about 160
        assert idle_claims <= 20, idle_claims
        run = create(*_leads("I", 60))
        deadline = time.monotonic() + 20
        while RunItem.objects.filter(run=run, status=ItemStatus.DONE).count() < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert RunItem.objects.filter(run=run, status=ItemStatus.DONE).count() == 60
    finally:
        worker.shutdown = True
        thread.join(30)
        connection.close()
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_exit_when_idle_ends_every_thread_soon_after_the_work(provider):
    run = create(*_leads("X", 30))
    worker = Worker(concurrency=8, batch_size=10, idle_sleep_s=0.05)
    started = time.monotonic()
    worker.run(exit_when_idle=True)
    assert time.monotonic() - started < worker_mod.FOLLOWER_WAIT_S  # no thread waited out its follower wait
    assert RunItem.objects.filter(run=run, status=ItemStatus.DONE).count() == 30


@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.django_db(transaction=True)
def test_a_worker_run_on_a_thread_gives_its_pooled_connection_back_when_it_stops(provider):
    def in_use() -> int:
        stats = connection.pool.get_stats()
        return stats.get("pool_size", 0) - stats.get("pool_available", 0)

    run = create(*_leads("W", 3))
    before = in_use()
    worker = Worker(concurrency=2, batch_size=10, idle_sleep_s=0.05)
    thread = threading.Thread(target=worker.run, kwargs={"exit_when_idle": True})
    thread.start()
    thread.join(30)
    assert RunItem.objects.filter(run=run, status=ItemStatus.DONE).count() == 3
    # Kept, each such worker took one of the pool's few connections for good: later threads of
    # the process (the suite's, `skiptrace_run`'s) waited out the pool's timeout.
    assert in_use() == before


# --- rate permits: one poller per process ------------------------------------------------------------


def test_threads_waiting_for_a_permit_ask_the_limiter_one_at_a_time(monkeypatch):
    asks: list[float] = []
    granted_at = time.monotonic() + 0.3

    class Limiter:
        def try_acquire(self, name, blocking=False):
            asks.append(time.monotonic())
            return time.monotonic() >= granted_at

    monkeypatch.setattr(rate, "rate_limiter", lambda: Limiter())
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(rate.rate_acquire(timeout_s=5))) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [True] * 20
    # 0.3 s of waiting at one ask per RATE_POLL_S, then one ask each: about 50. Twenty threads
    # polling every 20 ms on their own made about 320.
    assert len(asks) <= 0.3 / rate.RATE_POLL_S + 20 + 10, len(asks)


def test_a_permit_wait_gives_up_at_its_timeout(monkeypatch):
    class Never:
        def try_acquire(self, name, blocking=False):
            return False

    monkeypatch.setattr(rate, "rate_limiter", lambda: Never())
    started = time.monotonic()
    assert rate.rate_acquire(timeout_s=0.1) is False
    assert time.monotonic() - started < 1.0


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_postgresql_permits_are_post_dated_booked_when_the_window_is_full_and_their_requests_wait(settings):
    settings.SKIP_TRACE_RPS = 3
    rate.reset_rate_limiter()
    bucket = rate.rate_limiter().buckets()[0]
    import psycopg

    # a connection of the test's own (the limiter's pool has one, for its asks)
    with psycopg.connect(rate.limiter_conninfo(connection.settings_dict), autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{bucket._full_tbl}"')  # permits of earlier tests are not this window's

        def server_ms() -> float:
            return float(conn.execute("SELECT extract(epoch FROM clock_timestamp()) * 1000").fetchone()[0])

        assert rate.rate_acquire(timeout_s=1)
        assert rate.last_permit.ahead_ms == 0  # the server's clock not known yet: not post-dated
        entries = [rate.last_permit.entry_ms]
        for _ in range(2):
            assert rate.rate_acquire(timeout_s=1)
            asked_server = server_ms()
            assert rate.last_permit.ahead_ms == rate.PERMIT_AHEAD_MS
            # the entry is about PERMIT_AHEAD_MS ahead of the server's clock (less the answer's way back)
            assert rate.last_permit.entry_ms - asked_server > rate.PERMIT_AHEAD_MS - 20
            rate.rate_permit_fresh(sleep=time.sleep)
            assert server_ms() >= rate.last_permit.entry_ms  # the request would leave after its entry's time
            entries.append(rate.last_permit.entry_ms)
        # Three in the window (1.04 s), two of them post-dated: a process that does not post-date
        # is refused too, and so is a booking further ahead than PERMIT_BOOK_AHEAD_MS.
        granted, _, _ = conn.execute(f'SELECT * FROM "{bucket._function}"(%s, 1, 0, 0)', ("other",)).fetchone()
        assert granted is False
        assert rate.rate_acquire(timeout_s=0.05) is False
        # Within PERMIT_BOOK_AHEAD_MS of the first entry leaving the window, the next permit is
        # booked at that moment, and its request waits for it.
        time.sleep(max(0.0, (entries[0] + 1040 - rate.PERMIT_BOOK_AHEAD_MS / 2 - server_ms()) / 1000))
        assert rate.rate_acquire(timeout_s=0.05)
        assert entries[0] + 1040 < rate.last_permit.entry_ms < entries[0] + 1045
        rate.rate_permit_fresh(sleep=time.sleep)
        assert server_ms() >= rate.last_permit.entry_ms
        # at most 3 entries in any 1,040 ms
        stamps = sorted(1000 * r[0] for r in conn.execute(
            f'SELECT extract(epoch FROM item_timestamp) FROM "{bucket._full_tbl}"').fetchall())
        assert len(stamps) == 4 and stamps[3] - stamps[0] > 1040
    rate.reset_rate_limiter()


# --- bulk statements ------------------------------------------------------------------------------


def test_bulk_update_is_one_statement_on_postgresql_and_keeps_row_by_row_results():
    now = timezone.now()
    rows = [GuardState(name=f"g{n}", state="closed", updated_at=now) for n in range(5)]
    insert_rows(GuardState, rows, conflict=["name"], update_fields=["state"])
    for n, row in enumerate(rows):
        row.state = "it's \"open\"\\" if n % 2 else "NULL"  # quotes, a backslash, the word NULL
        row.opened_at = None if n == 0 else now
    twice = GuardState(name="g4", state="half_open", updated_at=now)  # one row twice: the later wins
    with CaptureQueriesContext(connection) as ctx:
        update_rows(GuardState, [*rows, twice], ["state", "opened_at"])
    if connection.vendor == "postgresql":
        assert len(ctx.captured_queries) == 1
    got = dict(GuardState.objects.filter(name__startswith="g").values_list("name", "state"))
    assert got == {"g0": "NULL", "g1": "it's \"open\"\\", "g2": "NULL", "g3": "it's \"open\"\\", "g4": "half_open"}
    assert GuardState.objects.get(name="g0").opened_at is None
    assert GuardState.objects.get(name="g1").opened_at == now


def test_bulk_upsert_keeps_the_later_row_and_do_nothing_keeps_the_first():
    now = timezone.now()
    insert_rows(GuardState, [GuardState(name="u1", state="closed", updated_at=now),
                             GuardState(name="u1", state="open", updated_at=now)],
                conflict=["name"], update_fields=["state"])
    assert GuardState.objects.get(name="u1").state == "open"
    insert_rows(GuardState, [GuardState(name="u2", state="closed", updated_at=now),
                             GuardState(name="u2", state="open", updated_at=now)], conflict=["name"])
    assert GuardState.objects.get(name="u2").state == "closed"


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_a_value_too_long_fails_the_bulk_statement_instead_of_being_cut():
    now = timezone.now()
    insert_rows(GuardState, [GuardState(name="long", state="closed", updated_at=now)], conflict=["name"],
                update_fields=["state"])
    with pytest.raises(DataError):
        update_rows(GuardState, [GuardState(name="long", state="x" * 40, updated_at=now)], ["state"])


def test_reserving_a_batch_writes_its_calls_and_items_in_a_few_statements(provider):
    run = create(*_leads("R", 100))
    worker = Worker(concurrency=1, batch_size=100, idle_sleep_s=0)
    with CaptureQueriesContext(connection) as ctx:
        assert worker.process_one_batch()
    assert ProviderCall.objects.filter(run_id=run.run_id).count() == 100
    writes = [q["sql"] for q in ctx.captured_queries
              if q["sql"].split(None, 1)[0] in ("INSERT", "UPDATE") and "provider_calls" in q["sql"].split("(", 1)[0]]
    if connection.vendor == "postgresql":
        assert len(writes) <= 3, writes  # the reservation, the answer (not one per call)


def test_writes_held_together_land_as_one_statement_with_the_results_of_writing_them_in_turn():
    from contacts.models import Lead, Phone
    from contacts.services import ContactsUpdate, leads_contacts_save
    from skiptrace.bulk import delete_rows, together

    now = timezone.now()
    Lead.objects.create(lead_id="T-1", street="1 Main St", city="Austin", state="TX", zip="78701")
    old = {"matched": True, "phones": [{"number": "5125550100", "type": "Mobile"}], "emails": []}
    new = {"matched": True, "phones": [{"number": "5125550111", "type": "Landline"},
                                       {"number": "5125550122", "type": "Mobile"}], "emails": []}
    leads_contacts_save([ContactsUpdate("T-1", None, old, None, cached=False, stale=False, answered_at=now)], now=now)
    with CaptureQueriesContext(connection) as ctx, transaction.atomic(), together():
        # the lead's old phone deleted and its new ones inserted: in one statement the delete sees
        # only the rows from before it, as when the writes run one after the other
        leads_contacts_save([ContactsUpdate("T-1", None, new, None, cached=False, stale=False, answered_at=now)],
                            now=now, fresh=True)
        guard = [GuardState(name="t-held", state="open", updated_at=now)]
        insert_rows(GuardState, guard, conflict=["name"], update_fields=["state"])
        if connection.vendor == "postgresql":  # held until the block ends (SQLite writes at once)
            assert not GuardState.objects.filter(name="t-held").exists()
    writes = [q["sql"] for q in ctx.captured_queries if q["sql"].split(None, 1)[0] not in ("BEGIN", "SAVEPOINT", "RELEASE", "COMMIT")]
    if connection.vendor == "postgresql":
        assert len(writes) == 2, writes  # the held read above, then every write in one statement
        assert writes[1].startswith("WITH w0 AS (DELETE FROM")
    assert sorted(Phone.objects.filter(lead_id="T-1").values_list("number", "type")) == [
        ("5125550111", "Landline"), ("5125550122", "Mobile")]
    assert GuardState.objects.get(name="t-held").state == "open"

    # two updates of one table in a block run in turn (one statement cannot update a row twice)
    rows = [GuardState(name="t-held", state="closed", updated_at=now)]
    with transaction.atomic(), together():
        update_rows(GuardState, rows, ["state"])
        rows[0].state = "half_open"
        update_rows(GuardState, rows, ["state"])
    assert GuardState.objects.get(name="t-held").state == "half_open"

    # an error inside the block sends nothing
    with pytest.raises(RuntimeError), transaction.atomic(), together():
        delete_rows(Phone, "lead_id", ["T-1"])
        raise RuntimeError("boom")
    assert Phone.objects.filter(lead_id="T-1").count() == 2


def test_a_batch_with_hundreds_of_new_phones_keeps_every_one_of_them_when_its_writes_are_held():
    """Past 200 rows an insert used COPY, at once: inside ``together()`` it would land before the
    held delete of the leads' old phones, and be deleted with them."""
    from contacts.models import Lead, Phone
    from contacts.services import ContactsUpdate, leads_contacts_save
    from skiptrace.bulk import together

    now = timezone.now()
    ids = [f"M-{n}" for n in range(80)]
    Lead.objects.bulk_create([Lead(lead_id=i, street="1 Main St", city="Austin", state="TX", zip="78701") for i in ids])
    old = {"matched": True, "phones": [{"number": "5125550100", "type": "Mobile"}], "emails": []}
    leads_contacts_save([ContactsUpdate(i, None, old, None, cached=False, stale=False, answered_at=now) for i in ids],
                        now=now)
    new = {"matched": True, "emails": [],
           "phones": [{"number": f"512555{n:04d}", "type": "Mobile"} for n in range(1, 4)]}
    with transaction.atomic(), together():  # 80 leads x 3 phones = 240 rows in one insert
        leads_contacts_save([ContactsUpdate(i, None, new, None, cached=False, stale=False, answered_at=now)
                             for i in ids], now=now, fresh=True)
    assert Phone.objects.filter(lead_id__in=ids).count() == 240
    assert set(Phone.objects.filter(lead_id__in=ids).values_list("number", flat=True)) == {
        "5125550001", "5125550002", "5125550003"}


def test_recording_an_answer_on_postgresql_is_one_statement_between_begin_and_commit(provider, monkeypatch):
    from skiptrace.money import record

    run = create(*_leads("W", 20))
    seen: list[list[str]] = []
    real = record.record_answer

    def counted(*args, **kwargs):
        with CaptureQueriesContext(connection) as ctx:
            real(*args, **kwargs)
        seen.append([q["sql"].split(None, 1)[0] for q in ctx.captured_queries])

    monkeypatch.setattr(record, "record_answer", counted)
    work(batch_size=20)
    assert RunItem.objects.filter(run=run, status=ItemStatus.DONE).count() == 20
    assert ProviderCall.objects.filter(run_id=run.run_id, state="completed").count() == 20
    from contacts.models import Lead, Phone

    assert Phone.objects.filter(lead__in=Lead.objects.filter(lead_id__startswith="W")).count() > 0
    assert Lead.objects.filter(lead_id__startswith="W", provider_call__isnull=False).count() == 20
    if connection.vendor == "postgresql":
        # (BEGIN and COMMIT in production; SAVEPOINT and RELEASE inside the test's transaction)
        assert [s[1:-1] for s in seen] == [["WITH"]], seen


# --- the day's spend without reading every call of the day (PostgreSQL) --------------------------


def _spend_by_calls() -> dict:
    from django.db.models import Case, F, Sum, When

    from skiptrace.models import OPEN_CALL_STATES

    rows = ProviderCall.objects.values("budget_day").annotate(
        s=Sum(Case(When(state__in=OPEN_CALL_STATES, then=F("estimate_cents")), default=F("cost_cents"))))
    return {r["budget_day"]: r["s"] for r in rows}


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_the_days_spend_from_the_trigger_equals_the_sum_over_its_calls_through_every_kind_of_change(settings):
    import datetime as dt

    import requests
    import responses

    from skiptrace.guards import budget
    from skiptrace.models import BudgetDelta, CallState
    from tests.money.test_service import URL, FakeBatchData

    fake = FakeBatchData(behaviour={"Nettle": "none"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_callback(responses.POST, URL, callback=fake)
        create(*_leads("A", 30), *_leads("N", 10))  # answered: matched and unmatched
        work(batch_size=15)
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=lambda r: (_ for _ in ()).throw(
            requests.exceptions.ReadTimeout("read timed out")))
        create(*_leads("B", 5))  # lost: costed at the estimate
        work()
    day = ProviderCall.objects.values_list("budget_day", flat=True).first()
    assert budget.budget_spent_cents(day) == _spend_by_calls()[day] > 0
    # a reparse-like change of settled costs, an open call, another day, and a deletion
    ProviderCall.objects.filter(state=CallState.LOST).update(cost_cents=3)
    call = ProviderCall.objects.filter(state=CallState.COMPLETED).first()
    ProviderCall.objects.filter(pk=call.pk).update(state=CallState.SENT, estimate_cents=11)
    other = day - dt.timedelta(days=1)
    ProviderCall.objects.filter(pk=call.pk + 1).update(budget_day=other)
    ProviderCall.objects.filter(pk=call.pk + 2).delete()
    expected = _spend_by_calls()
    assert {d: budget.budget_spent_cents(d) for d in expected} == expected
    assert BudgetDelta.objects.filter(budget_day=day).count() > 1
    budget.FOLD_MIN_ROWS, folded_at = 2, budget.FOLD_MIN_ROWS
    try:
        assert budget.budget_deltas_fold() > 0
    finally:
        budget.FOLD_MIN_ROWS = folded_at
    assert BudgetDelta.objects.filter(budget_day=day).count() == 1
    assert {d: budget.budget_spent_cents(d) for d in expected} == expected


def test_a_body_made_before_the_waits_is_the_body_sent(provider):
    from skiptrace.provider import BatchDataClient, TraceRequest

    client = BatchDataClient(base_url="http://127.0.0.1:9", path="/api/v1/property/skip-trace", token="t")
    reqs = [TraceRequest(request_id=str(n), street=f"{n} Oak St", city="Tampa", state="FL", zip="33610",
                         first="Pat", last="Lee") for n in range(3)]
    made = client.encode_body(reqs)
    checked: list[str] = []
    result = client.skip_trace(reqs, request_json=made, before_send=lambda: checked.append("permit"))
    assert checked == ["permit"] and len(result.results) == 3
    assert provider.bodies[-1] == __import__("json").loads(made)
    with pytest.raises(ValueError):
        client.encode_body([TraceRequest(request_id="x", street="", city="", state="", zip="", first="", last="")])


def test_a_cache_entrys_last_seen_is_kept_to_ten_minutes(provider):
    import datetime as dt

    from skiptrace import service
    from skiptrace.models import CacheEntry

    t0 = timezone.now()
    create(*_leads("R", 3), now=t0)
    work(clock=lambda: t0)
    first = set(CacheEntry.objects.values_list("last_seen", flat=True))
    service.L1.clear()
    soon = t0 + dt.timedelta(minutes=5)
    create(*_leads("R", 3), now=soon)
    work(clock=lambda: soon)
    assert set(CacheEntry.objects.values_list("last_seen", flat=True)) == first  # not rewritten
    later = t0 + dt.timedelta(minutes=11)
    create(*_leads("R", 3), now=later)
    work(clock=lambda: later)
    assert set(CacheEntry.objects.values_list("last_seen", flat=True)) == {later}
    assert len(provider.bodies) == 1


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_claims_start_where_the_queue_starts_and_still_find_items_put_back_below_it(provider):
    from skiptrace.money import claim
    from skiptrace.money.items import requeue

    clock = [100.0]
    hints = claim.ClaimHints(monotonic=lambda: clock[0])
    real = claim.HINTS
    claim.HINTS = hints
    try:
        run = create(*_leads("C", 60))
        first = items_claim(limit=10, now=timezone.now(), worker_id="t")
        assert hints.starts() == {run.run_id: min(i.id for i in first)}
        second = items_claim(limit=10, now=timezone.now(), worker_id="t")
        assert min(i.id for i in second) > max(i.id for i in first)
        requeue(first[:2], now=timezone.now(), delay_s=None, reason=None)  # back below the hint
        third = items_claim(limit=10, now=timezone.now(), worker_id="t")  # hinted: starts after them
        assert not {i.id for i in first[:2]} & {i.id for i in third}
        clock[0] += claim.ClaimHints.FULL_CLAIM_EVERY_S  # a full claim is due
        fourth = items_claim(limit=10, now=timezone.now(), worker_id="t")
        assert {i.id for i in first[:2]} <= {i.id for i in fourth}
        taken = [i.id for batch in (first[2:], second, third, fourth) for i in batch]
        while got := items_claim(limit=10, now=timezone.now(), worker_id="t"):
            taken += [i.id for i in got]
        assert sorted(taken) == sorted(RunItem.objects.filter(run=run).values_list("id", flat=True))
    finally:
        claim.HINTS = real
