"""The concurrency guard: provider requests in flight fleet-wide.

In flight = distinct ``batch_id`` of calls in state ``sent`` with a live lease, checked and taken
under one lock (``SKIP_TRACE_CONCURRENCY``).
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction

from skiptrace.guards.locks import lock_row


def slot_try_take(batch_id: str, *, now: dt.datetime, lease_s: float) -> set[int] | None:
    """Take a concurrency slot: mark this batch's calls ``sent`` iff fewer than
    SKIP_TRACE_CONCURRENCY requests are in flight fleet-wide. One transaction under the lock.

    Returns None when no slot is free, else the ids of the calls now ``sent``: only those still
    ``reserved`` with a live lease (a reservation the reaper took back, or may take back at any
    moment, must not leave)."""
    from skiptrace.models import CallState, ProviderCall

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
