"""The concurrency guard: provider requests in flight fleet-wide.

In flight = distinct ``batch_id`` of calls in state ``sent`` with a live lease, checked and taken
under one lock (``SKIP_TRACE_CONCURRENCY``).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection, transaction

from skiptrace.guards.locks import lock_row

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
    # "no slot"), leaving calls "sent" that nobody sends.
    script = sql.SQL("""
        SELECT pg_advisory_xact_lock({lock});
        WITH in_flight AS (
            SELECT count(DISTINCT batch_id) AS n FROM provider_calls WHERE state = {sent} AND lease_until > {now}
        ), taken AS (
            UPDATE provider_calls SET state = {sent}, sent_at = {now}, lease_until = {lease_until}
             WHERE batch_id = {batch} AND state = {reserved} AND lease_until > {now}
               AND (SELECT n FROM in_flight) < {limit}
            RETURNING id
        )
        SELECT (SELECT n FROM in_flight), ARRAY(SELECT id FROM taken);
    """).format(sent=sql.Literal(str(CallState.SENT)), reserved=sql.Literal(str(CallState.RESERVED)),
                now=sql.Literal(now), lease_until=sql.Literal(lease_until), batch=sql.Literal(batch_id),
                limit=sql.Literal(int(limit)), lock=sql.Literal(SLOTS_ADVISORY_LOCK))
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: no parameters, so one simple-query message
        raw.execute(script.as_string(raw.connection))
        raw.nextset()
        in_flight, ids = raw.fetchone()
    if in_flight >= limit:
        return None
    return set(ids)
