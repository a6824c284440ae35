"""The concurrency guard: provider requests in flight fleet-wide.

In flight = distinct ``batch_id`` of calls in state ``sent`` with a live lease, checked and taken
under one lock (``SKIP_TRACE_CONCURRENCY``). PostgreSQL keeps that set as rows of
``skiptrace_in_flight`` (``models.InFlightBatch``: written with the calls' move to ``sent``, removed
by a trigger when the last of them leaves it), so the count under the lock reads at most a few
dozen rows however many calls were ever sent; SQLite counts the calls.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from django.conf import settings
from django.db import DatabaseError, connection, transaction

from skiptrace.guards.locks import lock_row

log = logging.getLogger("convexa.guards")

# The PostgreSQL slot take's lock (a transaction-scoped advisory lock: no row to make or lose).
SLOTS_ADVISORY_LOCK = 0x5C07_0001


def slot_try_take(batch_id: str, *, now: dt.datetime, lease_s: float) -> set[int] | None:
    """Take a concurrency slot: mark this batch's calls ``sent`` iff fewer than
    SKIP_TRACE_CONCURRENCY requests are in flight fleet-wide. One transaction under the lock.

    Returns None when no slot is free, else the ids of the calls now ``sent``: only those still
    ``reserved`` with a live lease (a reservation the reaper took back, or may take back at any
    moment, must not leave)."""
    from skiptrace.models import CallState, ProviderCall

    if connection.vendor == "postgresql":
        return _slot_try_take_one_trip(batch_id, now=now, lease_s=lease_s)
    with transaction.atomic():
        lock_row("slots")
        in_flight = (
            ProviderCall.objects.filter(state=CallState.SENT, lease_until__gt=now)
            .values("batch_id").distinct().count()
        )
        if in_flight >= settings.SKIP_TRACE_CONCURRENCY:
            return None
        ids = set(ProviderCall.objects.filter(batch_id=batch_id, state=CallState.RESERVED, lease_until__gt=now)
                  .values_list("id", flat=True))
        ProviderCall.objects.filter(id__in=ids, state=CallState.RESERVED).update(
            state=CallState.SENT, sent_at=now, lease_until=now + dt.timedelta(seconds=lease_s)
        )
        return ids


def _slot_try_take_one_trip(batch_id: str, *, now: dt.datetime, lease_s: float) -> set[int] | None:
    """PostgreSQL: the same check-then-take as one simple-query message, so the slots lock is held
    for the server's few microseconds, not for four network round trips. PostgreSQL runs the
    statements of one such message as one implicit transaction (rolled back whole on an error),
    and each statement after the lock takes a new snapshot, so the count sees every slot taken
    before the lock was granted. With PostgreSQL 10 ms away the old transaction held the lock
    ~40 ms and capped the whole fleet at ~25 slot takes a second."""
    from psycopg import sql

    from skiptrace.models import CallState

    limit = settings.SKIP_TRACE_CONCURRENCY
    lease_until = now + dt.timedelta(seconds=lease_s)
    # The count and the take are one statement (one snapshot): two statements could disagree (the
    # count full, a call finishing before the UPDATE's own count, the calls taken yet reported
    # "no slot"), leaving calls "sent" that nobody sends. The batch's in-flight row is written by
    # the same statement, only if a call was taken; the release trigger removes it when the last
    # of them leaves "sent". (Counting the sent calls themselves read every dead index entry of
    # every call ever sent until autovacuum came by: 90 ms under this lock at 67,000 calls.)
    script = sql.SQL("""
        SELECT pg_advisory_xact_lock({lock});
        WITH in_flight AS (
            SELECT count(*) AS n FROM skiptrace_in_flight WHERE lease_until > {now}
        ), taken AS (
            UPDATE provider_calls SET state = {sent}, sent_at = {now}, lease_until = {lease_until}
             WHERE batch_id = {batch} AND state = {reserved} AND lease_until > {now}
               AND (SELECT n FROM in_flight) < {limit}
            RETURNING id
        ), slot AS (
            INSERT INTO skiptrace_in_flight (batch_id, lease_until)
            SELECT {batch}, {lease_until} WHERE EXISTS (SELECT 1 FROM taken)
            ON CONFLICT (batch_id) DO UPDATE SET lease_until = EXCLUDED.lease_until
        )
        SELECT (SELECT n FROM in_flight), ARRAY(SELECT id FROM taken),
               (SELECT state FROM skiptrace_guards WHERE name = 'breaker'),
               (SELECT next_probe_at FROM skiptrace_guards WHERE name = 'breaker');
    """).format(sent=sql.Literal(str(CallState.SENT)), reserved=sql.Literal(str(CallState.RESERVED)),
                now=sql.Literal(now), lease_until=sql.Literal(lease_until), batch=sql.Literal(batch_id),
                limit=sql.Literal(int(limit)), lock=sql.Literal(SLOTS_ADVISORY_LOCK))
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: no parameters, so one simple-query message
        raw.execute(script.as_string(raw.connection))
        raw.nextset()
        in_flight, ids, breaker_state, next_probe_at = raw.fetchone()
    if in_flight >= limit:
        return None
    # the breaker as it was when the slot was taken: the send's last look needs no query of its own
    _seen.breaker = (breaker_state or "closed", next_probe_at)
    return set(ids)


_seen = threading.local()


def breaker_at_take() -> tuple[str, dt.datetime | None] | None:
    """PostgreSQL: the breaker's ``(state, next_probe_at)`` read with this thread's last slot
    taken, once (None after, and on SQLite)."""
    seen = getattr(_seen, "breaker", None)
    _seen.breaker = None
    return seen


def slots_vacuum() -> bool:
    """PostgreSQL housekeeping: ``VACUUM`` the in-flight rows' table. Every provider request writes
    a row there and its release deletes it; where autovacuum is off or behind, the dead rows stay,
    and the count under the slot lock reads every one of them (90 kB after 680 requests of a
    benchmark run, growing with each); vacuumed, the table stays the size of what is in flight at
    once. VACUUM cannot run inside a transaction: only outside one, best effort. True when it ran."""
    from skiptrace.models import InFlightBatch

    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    try:
        with connection.cursor() as cursor:
            # no TRUNCATE: giving the empty pages back takes an exclusive lock on the table, and
            # every slot take queued behind it (seconds, sampled in a 100,000-lead run); empty
            # pages are reused by the next rows instead
            cursor.execute(f"VACUUM (TRUNCATE false) {InFlightBatch._meta.db_table}")
    except DatabaseError as exc:
        log.warning("could not vacuum the in-flight table (%s); the slot count reads its dead rows",
                    exc.__class__.__name__)
        return False
    return True
