"""Step 1, the claim: queued items whose time has come, with a lease, recorded with the worker's id.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from django.db import connection, transaction
from django.db.models import Q

from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.money.policy import lease_seconds
from skiptrace.states import claimable_q


def items_claim(*, limit: int, now: dt.datetime, worker_id: str, run_id: str | None = None) -> list[RunItem]:
    """Take up to ``limit`` queued items whose time has come, with a lease.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` inside one UPDATE, so workers on several hosts never
    block on or double-claim a row (``_claim_one_statement``). SQLite: the transaction holds the
    write lock from its start (IMMEDIATE), so the conditional update below is the claim.
    """
    lease = now + dt.timedelta(seconds=lease_seconds())
    if connection.vendor == "postgresql":
        return _claim_one_statement(run_id=run_id, limit=limit, now=now, lease=lease, worker_id=worker_id)
    # SQLite: as on PostgreSQL, each claimable run's oldest `limit` (ix_run_items_queue), then the
    # oldest `limit` of those. One query over the table joined to the runs sorted every queued item on each claim
    # (SQLite's plan: "USE TEMP B-TREE FOR ORDER BY").
    runs = Run.objects.filter(claimable_q())
    if run_id is not None:
        runs = runs.filter(run_id=run_id)
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    with transaction.atomic():
        ids: list[int] = []
        for rid in runs.values_list("run_id", flat=True):
            ids += RunItem.objects.filter(run_id=rid, status=ItemStatus.QUEUED).filter(due).order_by("id").values_list(
                "id", flat=True)[:limit]
        ids = sorted(ids)[:limit]
        if not ids:
            return []
        RunItem.objects.filter(id__in=ids, status=ItemStatus.QUEUED).update(
            status=ItemStatus.IN_FLIGHT, lease_until=lease, updated_at=now, worker_id=worker_id[:64]
        )
        items = list(RunItem.objects.filter(id__in=ids, status=ItemStatus.IN_FLIGHT, lease_until=lease).select_related("run"))
        run_ids = {item.run_id for item in items}
        Run.objects.filter(run_id__in=run_ids, started_at__isnull=True).update(started_at=now)
    return items


class ClaimHints:
    """PostgreSQL: where each run's queue starts, as far as this process knows (the lowest id of its
    last claim there), so that a claim does not walk the index entries of every item claimed before.

    Those entries stay in ``ix_run_items_queue`` under ``status = 'queued'`` until VACUUM (the rows
    moved on; their old versions did not), and each claim stepped over all of them: a claim at item
    90,000 of a 100,000-lead run read 90,000 dead entries first. An item can go back to the queue
    below a hint (requeued, reaped, put back), so a run's claim ignores its hint at least every
    ``FULL_CLAIM_EVERY_S``, and every claim after one that came back short (the queue may look
    empty only above the hint)."""

    FULL_CLAIM_EVERY_S = 1.0

    def __init__(self, monotonic=time.monotonic) -> None:
        self._lock = threading.Lock()
        self._start: dict[str, int] = {}
        self._full_at: dict[str, float] = {}
        self.monotonic = monotonic

    def starts(self) -> dict[str, int]:
        """The hints to use now (runs due for a full claim are left out, and noted as done)."""
        now = self.monotonic()
        with self._lock:
            use = {}
            for run_id, start in self._start.items():
                if now - self._full_at.get(run_id, 0.0) < self.FULL_CLAIM_EVERY_S:
                    use[run_id] = start
                else:
                    self._full_at[run_id] = now
            return use

    def learn(self, items, *, hinted: dict[str, int], full: bool) -> None:
        with self._lock:
            if hinted and full:  # short behind a hint: the next claims look at whole queues
                self._start.clear()
                return
            low: dict[str, int] = {}
            for item in items:
                low[item.run_id] = min(item.id, low.get(item.run_id, item.id))
            now = self.monotonic()
            for run_id, start in low.items():  # a hinted claim moves its hint up; a full one sets it
                self._start[run_id] = max(start, self._start.get(run_id, 0)) if run_id in hinted else start
                self._full_at.setdefault(run_id, now)
            if len(self._start) > 1000:  # finished runs are never claimed again: forget the oldest
                for run_id in list(self._start)[:500]:
                    self._start.pop(run_id, None)
                    self._full_at.pop(run_id, None)

    def clear(self) -> None:
        with self._lock:
            self._start.clear()
            self._full_at.clear()


HINTS = ClaimHints()


def _claim_one_statement(*, run_id: str | None, limit: int, now: dt.datetime, lease: dt.datetime,
                         worker_id: str) -> list[RunItem]:
    """PostgreSQL: pick (``FOR UPDATE SKIP LOCKED``), lease and read the items in one statement,
    its own transaction: one round trip where the transaction took six (BEGIN, pick, update, read,
    the runs' start, COMMIT). Each item comes back with its run's row (``RETURNING`` the joined
    run's columns: no second query); a run's first claim sets its ``started_at``.

    The pick walks each claimable run's queue in id order (``ix_run_items_queue``: run, status, id)
    and stops after ``limit`` rows, then keeps the oldest ``limit`` of all. A pick over the whole
    table joined to the runs let the planner choose a sort of every queued item when its statistics
    were stale: 17 ms a claim at 20,000 queued, more with more, and each idle thread paid it again.
    """
    quote = connection.ops.quote_name
    table = quote(RunItem._meta.db_table)
    runs = Run.objects.filter(claimable_q())
    if run_id is not None:
        runs = runs.filter(run_id=run_id)
    runs_sql, runs_params = runs.values("run_id").query.sql_with_params()
    hinted = HINTS.starts()
    item_fields = RunItem._meta.concrete_fields
    run_fields = Run._meta.concrete_fields
    runs_table = quote(Run._meta.db_table)
    columns = ", ".join([f"{table}.{quote(f.column)}" for f in item_fields] + [f"r.{quote(f.column)}" for f in run_fields])
    # CTEs are evaluated once. As `id IN (subquery)` PostgreSQL may run the subquery again for every
    # row it updates, and its LIMIT then bounds each run, not the claim (seen: a claim of 1 took all
    # 12 queued items). Rows the lateral pick locks beyond the claim's `limit` are free again when the
    # statement ends.
    sql = (
        f"WITH ok AS ({runs_sql}), hint AS (SELECT unnest(%s::text[]) AS run_id, unnest(%s::bigint[]) AS from_id), "
        f"picked AS (SELECT p.id FROM ok LEFT JOIN hint ON hint.run_id = ok.run_id CROSS JOIN LATERAL ("
        f"SELECT q.id FROM {table} q WHERE q.run_id = ok.run_id AND q.status = %s AND q.id >= COALESCE(hint.from_id, 0) "
        f"AND (q.not_before IS NULL OR q.not_before <= %s) ORDER BY q.id LIMIT %s FOR UPDATE SKIP LOCKED) p "
        f"ORDER BY p.id LIMIT %s) "
        f"UPDATE {table} SET {quote('status')} = %s, {quote('lease_until')} = %s, {quote('updated_at')} = %s, "
        f"{quote('worker_id')} = %s FROM picked, {runs_table} r WHERE {table}.{quote('id')} = picked.{quote('id')} "
        f"AND {table}.{quote('status')} = %s AND r.{quote('run_id')} = {table}.{quote('run_id')} RETURNING {columns}"
    )
    params = [*runs_params, list(hinted), list(hinted.values()), ItemStatus.QUEUED, now, limit, limit,
              ItemStatus.IN_FLIGHT, lease, now, worker_id[:64], ItemStatus.QUEUED]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    alias, n = RunItem.objects.db, len(item_fields)
    item_names, run_names = [f.attname for f in item_fields], [f.attname for f in run_fields]
    # what a queryset would do to a value read (none of these columns needs it today)
    convert = [(k, f.from_db_value) for k, f in enumerate([*item_fields, *run_fields]) if hasattr(f, "from_db_value")]
    runs_by_id: dict[str, Run] = {}
    items = []
    for row in rows:  # each item with its run's row (read by the same statement), one Run a run
        if convert:
            row = list(row)
            for k, from_db in convert:
                row[k] = from_db(row[k], None, connection)
        item = RunItem.from_db(alias, item_names, row[:n])
        if item.run_id not in runs_by_id:
            runs_by_id[item.run_id] = Run.from_db(alias, run_names, row[n:])
        items.append(item)
    items.sort(key=lambda i: (i.position, i.id))
    HINTS.learn(items, hinted=hinted, full=len(items) < limit)
    if not items:
        return []
    unstarted = [rid for rid, run in runs_by_id.items() if run.started_at is None]
    if unstarted:
        Run.objects.filter(run_id__in=unstarted, started_at__isnull=True).update(started_at=now)
        for rid in unstarted:
            runs_by_id[rid].started_at = now
    for item in items:
        item.run = runs_by_id[item.run_id]
    return items
