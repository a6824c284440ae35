"""Step 1, the claim: queued items whose time has come, with a lease, recorded with the worker's id.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection, transaction
from django.db.models import Q

from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.money.policy import lease_seconds
from skiptrace.states import claimable_q


def items_claim(*, limit: int, now: dt.datetime, worker_id: str, run_id: str | None = None) -> list[RunItem]:
    """Take up to ``limit`` queued items whose time has come, with a lease.

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so workers on several hosts never block on or
    double-claim a row. SQLite: the transaction holds the write lock from its start (IMMEDIATE), so
    the conditional update below is the claim.
    """
    lease = now + dt.timedelta(seconds=lease_seconds())
    eligible = RunItem.objects.filter(status=ItemStatus.QUEUED).filter(
        Q(not_before__isnull=True) | Q(not_before__lte=now)
    )
    eligible = eligible.filter(claimable_q("run__"))
    if run_id is not None:
        eligible = eligible.filter(run_id=run_id)
    with transaction.atomic():
        candidates = eligible.order_by("run__created_at", "position", "id")
        if connection.vendor == "postgresql":
            candidates = candidates.select_for_update(skip_locked=True, of=("self",))
        ids = list(candidates.values_list("id", flat=True)[:limit])
        if not ids:
            return []
        RunItem.objects.filter(id__in=ids, status=ItemStatus.QUEUED).update(
            status=ItemStatus.IN_FLIGHT, lease_until=lease, updated_at=now, worker_id=worker_id[:64]
        )
        items = list(RunItem.objects.filter(id__in=ids, status=ItemStatus.IN_FLIGHT, lease_until=lease).select_related("run"))
        run_ids = {item.run_id for item in items}
        Run.objects.filter(run_id__in=run_ids, started_at__isnull=True).update(started_at=now)
    return items
