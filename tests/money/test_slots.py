"""The concurrency slot: a provider request holds one from the move of its calls to ``sent`` until
the last of them leaves ``sent``, whatever path it leaves by; a dead worker's slot frees with its
lease. On PostgreSQL the slots are rows kept by a trigger, on SQLite a count of the calls: the
behaviour is the same on both."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection, transaction

from skiptrace import guards
from skiptrace.guards.slots import slot_try_take
from skiptrace.models import CallState, InFlightBatch, ProviderCall
from skiptrace.money import leases_reap

pytestmark = pytest.mark.django_db

LEASE_S = 120.0


def reserve(batch: str, n: int, now: dt.datetime) -> list[int]:
    """``n`` calls reserved for one provider request, as ``batch_reserve`` leaves them."""
    rows = [ProviderCall(provider="batchdata", idempotency_key=f"{batch}-{k}".ljust(64, "0"), lead_id=f"L-{batch}-{k}",
                         request_json="{}", signature=f"{batch}-{k}".ljust(64, "s"), batch_id=batch,
                         budget_day=guards.budget_day(now), estimate_cents=7, state=CallState.RESERVED,
                         lease_until=now + dt.timedelta(seconds=LEASE_S), created_at=now)
            for k in range(n)]
    return [c.pk for c in ProviderCall.objects.bulk_create(rows)]


def take(batch: str, now: dt.datetime) -> set[int] | None:
    return slot_try_take(batch, now=now, lease_s=LEASE_S)


def in_flight_rows() -> set[str]:
    return set(InFlightBatch.objects.values_list("batch_id", flat=True))


@pytest.fixture
def full(settings, clock):
    """Two slots, both taken (batches a and b, two calls each); batch c waits."""
    settings.SKIP_TRACE_CONCURRENCY = 2
    ids = {b: reserve(b, 2, clock()) for b in ("a", "b", "c")}
    assert take("a", clock()) == set(ids["a"])
    assert take("b", clock()) == set(ids["b"])
    assert take("c", clock()) is None
    assert ProviderCall.objects.filter(batch_id="c", state=CallState.RESERVED).count() == 2  # not taken
    return ids


@pytest.mark.parametrize("leaves", [CallState.COMPLETED, CallState.ERRORED, CallState.UNREADABLE, CallState.LOST])
def test_a_slot_frees_when_the_last_call_of_its_request_leaves_sent(full, clock, leaves):
    first, second = full["a"]
    ProviderCall.objects.filter(pk=first).update(state=leaves, lease_until=None)
    assert take("c", clock()) is None  # one call of request a is still out: still in flight
    ProviderCall.objects.filter(pk=second).update(state=leaves, lease_until=None)
    assert take("c", clock()) == set(full["c"])
    reserve("d", 1, clock())
    assert take("d", clock()) is None  # b and c now hold both slots
    if connection.vendor == "postgresql":
        assert in_flight_rows() == {"b", "c"}


def test_a_request_whose_calls_are_deleted_frees_its_slot(full, clock):
    ProviderCall.objects.filter(batch_id="b").delete()
    assert take("c", clock()) == set(full["c"])


def test_a_dead_workers_slot_frees_with_its_lease_and_the_reaper_clears_it(full, clock):
    clock.advance(seconds=LEASE_S + 1)  # a and b were sent by a worker that died: their leases pass
    fresh = reserve("d", 1, clock())
    assert take("d", clock()) == set(fresh)  # the dead requests no longer count
    assert leases_reap(now=clock())["lost"] == 4  # a and b: lost, costed at their estimate
    assert not ProviderCall.objects.filter(batch_id__in=["a", "b"], state=CallState.SENT).exists()
    if connection.vendor == "postgresql":
        assert in_flight_rows() == {"d"}


def test_completed_history_never_counts_against_the_slots(settings, clock):
    settings.SKIP_TRACE_CONCURRENCY = 1
    for n in range(30):  # thirty requests one after another, each answered before the next
        batch = f"h{n}"
        ids = reserve(batch, 3, clock())
        assert take(batch, clock()) == set(ids), f"request {n} found no slot"
        ProviderCall.objects.filter(batch_id=batch).update(state=CallState.COMPLETED, lease_until=None)
    if connection.vendor == "postgresql":
        assert in_flight_rows() == set()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the in-flight rows are PostgreSQL's")
def test_postgresql_keeps_one_in_flight_row_per_request_with_its_lease(full, clock):
    rows = dict(InFlightBatch.objects.values_list("batch_id", "lease_until"))
    assert set(rows) == {"a", "b"}
    assert rows["a"] == clock() + dt.timedelta(seconds=LEASE_S)
    leases = set(ProviderCall.objects.filter(batch_id="a").values_list("lease_until", flat=True))
    assert leases == {rows["a"]}  # the slot lasts exactly as long as the calls' lease


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the in-flight rows are PostgreSQL's")
@pytest.mark.django_db(transaction=True)
def test_housekeeping_vacuums_the_dead_in_flight_rows_so_the_slot_count_stays_small(settings, clock):
    from skiptrace.guards.slots import slots_vacuum
    from skiptrace.worker import Worker

    def pages() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_relation_size('skiptrace_in_flight') / current_setting('block_size')::int")
            return cursor.fetchone()[0]

    def requests(first: int, n: int) -> None:  # one after another: each writes a row, its release deletes it
        for k in range(first, first + n):
            batch = f"v{k}"
            reserve(batch, 1, clock())
            assert take(batch, clock())
            ProviderCall.objects.filter(batch_id=batch).update(state=CallState.COMPLETED, lease_until=None)

    settings.SKIP_TRACE_CONCURRENCY = 1
    worker = Worker(concurrency=1, clock=clock)
    requests(0, 300)
    grown = pages()
    assert in_flight_rows() == set() and grown >= 2  # nothing in flight, yet the dead rows fill pages
    with transaction.atomic():
        assert slots_vacuum() is False  # VACUUM cannot run in a transaction: skipped, no error
    worker.housekeeping(force=True)
    requests(300, 300)  # as many again: they reuse the vacuumed space
    assert pages() <= grown
    worker.housekeeping(force=True)
    requests(600, 300)
    assert pages() <= grown  # bounded by what is in flight at once, not by every request ever sent
