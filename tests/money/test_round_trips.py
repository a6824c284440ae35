"""How many times a batch waits on PostgreSQL (each a network round trip)."""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection  # noqa: F401 - the skipif condition
from psycopg import waiting

from skiptrace.models import RunItem
from skiptrace.worker import Worker
from tests.money.test_service import create, lead

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif("connection.vendor != 'postgresql'")]


class RoundTrips:
    """Counts the times psycopg waits for the server's answer after sending (a round trip: a
    query, a BEGIN, a COMMIT, a pipeline's sync), with the statement each was for."""

    def __init__(self, monkeypatch) -> None:
        self.trips: list[str] = []
        self.last = "?"
        real_wait = waiting.wait
        rt = self

        def counted(gen):
            reading = False
            try:
                state = next(gen)
                while True:
                    is_read = state == waiting.Wait.R
                    if is_read and not reading:
                        rt.trips.append(rt.last)
                    reading = is_read
                    state = gen.send((yield state))
            except StopIteration as stop:
                return stop.value

        def wait(gen, *args, **kwargs):
            return real_wait(counted(gen), *args, **kwargs)

        real_execute = psycopg.Cursor.execute

        def execute(cur, query, *args, **kwargs):
            conn = cur.connection
            if not conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE \
                    and conn._pipeline is None:
                rt.trips.append("BEGIN (psycopg's own)")
            q = query if isinstance(query, str) else query.as_string(cur) if hasattr(query, "as_string") else str(query)
            rt.last = " ".join(str(q).split())[:80]
            return real_execute(cur, query, *args, **kwargs)

        monkeypatch.setattr(waiting, "wait", wait)
        monkeypatch.setattr(psycopg.Cursor, "execute", execute)


def test_a_batch_waits_on_postgresql_a_handful_of_times(provider, monkeypatch):
    """With PostgreSQL 10 ms away each round trip is 10 ms of a pooled connection: a worker's
    threads waited for one 42 % of the time when a batch made ~21 of them (py-spy, rps_netem).
    A steady batch of a run (its first made the guard rows and the limiter) now makes: the claim;
    the reads (one pipeline); BEGIN, the calls' INSERT, the items' update with COMMIT; the slot
    (and the breaker's last look); the permit; the answer (BEGIN, one statement, COMMIT); the
    breaker sample; the run's counters. A small run is recounted after each batch (six more).
    A batch served from the in-process cache makes no cache query (it used to fail building one)."""
    create(*[lead(f"RT{i}", street=f"{100 + i} Rowan Dr") for i in range(30)])
    worker = Worker(concurrency=1, batch_size=10, idle_sleep_s=0)
    assert worker.process_one_batch()
    rt = RoundTrips(monkeypatch)
    assert worker.process_one_batch()
    assert len(provider.items) == 20
    trips = [t for t in rt.trips if "skiptrace_breaker_samples" not in t or t.startswith("WITH s AS")]
    batch, recount = trips[:-6], trips[-6:]  # (the breaker's window is trimmed every 20th sample: not counted)
    assert len(batch) <= 10, "\n".join(rt.trips)
    assert recount[0].startswith("BEGIN") and recount[-1].startswith("UPDATE"), "\n".join(rt.trips)


def test_a_lead_served_from_the_in_process_cache_reserves_nothing_and_raises_nothing(provider):
    """The same lead in a second run is answered from the worker's in-process cache (L1): the
    reservation's reads are built for the signatures it misses, here none."""
    create(lead("L1-1", street="5 Larch Ln"))
    worker = Worker(concurrency=1, batch_size=10, idle_sleep_s=0)
    assert worker.process_one_batch()
    create(lead("L1-2", street="5 Larch Ln"))
    assert worker.process_one_batch()  # it raised EmptyResultSet (an empty IN) before
    assert len(provider.items) == 1
    assert RunItem.objects.get(lead_id="L1-2").cached
