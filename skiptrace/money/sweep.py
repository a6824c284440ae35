"""The cached claim: while the caches answer (nearly) everything, serve a window of thousands of
queued items in bulk, with no model objects, and claim only the rest.

Who it is for: a re-upload of a list already paid for. Every lead's contacts already come from the
call that answers it, so serving it changes only provenance columns (the item: ``done``,
``cached``, the call; the lead: ``cached``, the run, the time) and nothing about its phones and
emails (``contacts.services.leads_contacts_save`` keeps them too). A claimed item costs ~0.25 ms
through ``batch_process`` (its model, its cache answer parsed from JSON, its contacts compared);
here ~35 µs on PostgreSQL (one statement for the whole window, ``_cached_claim_pg``) and a few
tuples and its share of five bulk statements on SQLite.

An item of the window is served here only when the answer is sure to be what ``batch_process``
would do with it:

- its first attempt (``primary``), its L2 entry (``skiptrace_cache``) not expired, and the run
  does not force a re-fetch of answers older than itself (``cache.usable``);
- it cannot want the sanitized retry (a unit marker and a different sanitized signature on a run
  that retries): whether it does depends on the answer's contacts, which only the full path reads;
- its lead already carries the answering call (``leads.provider_call_id``): nothing to rewrite.

Every other item of the window is claimed (``in_flight``, with a lease) and returned for
``batch_process``, which serves, retries, sends or puts it back as usual. So each window item ends
this step served or claimed, never left behind, and the next window starts after this one
(``SweepHints``). The whole step is one transaction: a failure leaves every item queued.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace

from django.db import connection, transaction
from django.db.models import Q

from contacts.models import Lead
from contacts.services import SOURCE as CONTACTS_SOURCE
from skiptrace.bulk import update_rows
from skiptrace.models import AttemptReason, CacheEntry, ItemStatus, Run, RunItem
from skiptrace.money.cache import cache_key
from skiptrace.money.items import LAST_SEEN_RESOLUTION_S
from skiptrace.money.policy import lease_seconds
from skiptrace.provider import PROVIDER
from skiptrace.states import claimable_q

SWEEP_WINDOW = 2_000  # queued items one cached claim looks at


@dataclass
class Swept:
    window: int = 0  # items of the window (served + claimed)
    served: int = 0  # served here from the cache
    items: list[RunItem] = field(default_factory=list)  # claimed for batch_process
    run_ids: set[str] = field(default_factory=set)  # runs whose items were served here


class SweepHints:
    """Where each run's next window starts (after this process's last window there), so that a
    window does not step over the index entries of every item served before (see
    ``claim.ClaimHints``). A window that came back short ends at the queue's end: the run's next
    window starts at its queue's start again, and finds what was put back below."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._start: dict[str, int] = {}

    def start(self, run_id: str) -> int:
        with self._lock:
            return self._start.get(run_id, 0)

    def starts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._start)

    def learn(self, run_id: str, *, last_id: int | None, full: bool) -> None:
        with self._lock:
            if last_id is None or not full:
                self._start.pop(run_id, None)
            else:
                self._start[run_id] = max(last_id + 1, self._start.get(run_id, 0))
            if len(self._start) > 1000:
                for rid in list(self._start)[:500]:
                    self._start.pop(rid, None)

    def clear(self) -> None:
        with self._lock:
            self._start.clear()


HINTS = SweepHints()

_WINDOW_COLUMNS = ("id", "run_id", "lead_id", "signature", "sanitized_signature", "has_unit", "attempt_reason")


def cached_claim(*, limit: int = SWEEP_WINDOW, now: dt.datetime, worker_id: str,
                 run_id: str | None = None) -> Swept:
    """Serve what the L2 cache surely answers in a window of up to ``limit`` queued items; claim the
    rest of the window (returned in ``Swept.items``, for ``batch_process``)."""
    runs = Run.objects.filter(claimable_q())
    if run_id is not None:
        runs = runs.filter(run_id=run_id)
    out = Swept()
    if connection.vendor == "postgresql":
        return _cached_claim_pg(runs, out, limit=limit, now=now, worker_id=worker_id)
    moved: list[str] = []
    try:
        with transaction.atomic():  # IMMEDIATE: the window is this writer's until the commit
            _cached_claim(runs, out, limit=limit, now=now, worker_id=worker_id, pg=False, moved=moved)
    except BaseException:  # nothing happened: the runs' next windows start at their queues' start
        for rid in moved:
            HINTS.learn(rid, last_id=None, full=False)
        raise
    return out


def _per_run(limit: int, runs: int) -> int:
    """As the claim does: each run's oldest, then the oldest ``limit`` of those (many runs: fewer of each)."""
    return min(limit, max(100, -(-2 * limit // max(runs, 1))))


def _cached_claim_pg(runs, out: Swept, *, limit: int, now: dt.datetime, worker_id: str) -> Swept:
    """PostgreSQL: the whole step in one statement, its own transaction, one round trip (and one
    more to read the claimed rest). The window is picked as the claim picks (``FOR UPDATE SKIP
    LOCKED``, each run's queue from its hint); the L2 key is computed in SQL (``sha256`` of the
    signature, as ``cache_key``); one UPDATE serves the hits and leases the rest. In Python, the
    same step spent a third of its time building, quoting and parsing rows of 2,000-value lists."""
    quote = connection.ops.quote_name
    items, runs_t = quote(RunItem._meta.db_table), quote(Run._meta.db_table)
    cache_t, leads_t = quote(CacheEntry._meta.db_table), quote(Lead._meta.db_table)
    runs_sql, runs_params = runs.values("run_id").query.sql_with_params()
    hints = HINTS.starts()
    sql = f"""
WITH ok AS ({runs_sql}),
hint AS (SELECT unnest(%s::text[]) AS run_id, unnest(%s::bigint[]) AS from_id),
n AS (SELECT LEAST(%s, GREATEST(100, ceil(2.0 * %s / GREATEST(count(*), 1))))::int AS per_run FROM ok),
picked AS MATERIALIZED (
  SELECT p.* FROM ok LEFT JOIN hint ON hint.run_id = ok.run_id CROSS JOIN LATERAL (
    SELECT q.id, q.run_id, q.lead_id, q.signature, q.sanitized_signature, q.has_unit, q.attempt_reason
    FROM {items} q WHERE q.run_id = ok.run_id AND q.status = 'queued' AND q.id >= COALESCE(hint.from_id, 0)
      AND (q.not_before IS NULL OR q.not_before <= %s)
    ORDER BY q.id LIMIT (SELECT per_run FROM n) FOR UPDATE SKIP LOCKED) p),
win AS MATERIALIZED (SELECT * FROM picked ORDER BY id LIMIT %s),
cand AS MATERIALIZED (  -- each window item with the entry that surely answers it, if one does
  SELECT w.id, w.run_id, h.cache_id, h.call_id, h.last_seen FROM win w LEFT JOIN LATERAL (
    SELECT c.id AS cache_id, c.provider_call_id AS call_id, c.last_seen
    FROM {runs_t} r, {cache_t} c, {leads_t} l
    WHERE r.run_id = w.run_id AND w.attempt_reason = %s
      AND NOT (w.has_unit AND r.policy_retry_sanitized AND w.sanitized_signature <> ''
               AND w.sanitized_signature <> w.signature)
      AND c.provider = %s AND c.idempotency_key = encode(sha256(convert_to(w.signature, 'UTF8')), 'hex')
      AND c.ttl_expires_at > %s AND c.provider_call_id IS NOT NULL
      AND NOT (r.policy_force AND c.created_at < r.created_at)
      AND l.lead_id = w.lead_id AND l.provider_call_id = c.provider_call_id
    LIMIT 1) h ON true),
upd AS (
  UPDATE {items} AS t SET
    status = CASE WHEN cand.call_id IS NULL THEN %s ELSE %s END,
    cached = cand.call_id IS NOT NULL OR t.cached,
    stale = cand.call_id IS NULL AND t.stale,
    provider_call_id = COALESCE(cand.call_id, t.provider_call_id),
    lease_until = CASE WHEN cand.call_id IS NULL THEN %s::timestamptz END,
    last_error = CASE WHEN cand.call_id IS NULL THEN t.last_error END,
    updated_at = %s, worker_id = %s
  FROM cand WHERE t.id = cand.id
  RETURNING t.id, t.run_id, t.lead_id, cand.call_id IS NOT NULL AS served),
leads_up AS (
  UPDATE {leads_t} AS l SET source = %s, cached = true, stale = false, run_id = upd.run_id,
    contacts_updated_at = %s, updated_at = %s
  FROM upd WHERE upd.served AND l.lead_id = upd.lead_id),
seen AS (
  UPDATE {cache_t} SET last_seen = %s
  WHERE id IN (SELECT cache_id FROM cand WHERE cache_id IS NOT NULL AND (last_seen IS NULL OR last_seen < %s))),
started AS (
  UPDATE {runs_t} SET started_at = %s WHERE started_at IS NULL AND run_id IN (SELECT run_id FROM win))
SELECT p.run_id, count(*), count(win.id), max(win.id), (SELECT count(*) FROM upd WHERE upd.run_id = p.run_id
  AND upd.served), (SELECT per_run FROM n), NULL::bigint FROM picked p LEFT JOIN win ON win.id = p.id GROUP BY p.run_id
UNION ALL
SELECT upd.run_id, NULL, NULL, NULL, NULL, NULL, upd.id FROM upd WHERE NOT upd.served
"""
    cutoff = now - dt.timedelta(seconds=LAST_SEEN_RESOLUTION_S)
    lease = now + dt.timedelta(seconds=lease_seconds())
    params = [*runs_params, list(hints), list(hints.values()), limit, limit, now, limit,
              AttemptReason.PRIMARY, PROVIDER, now,
              ItemStatus.IN_FLIGHT, ItemStatus.DONE, lease, now, worker_id[:64],
              CONTACTS_SOURCE, now, now, now, cutoff, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    rest: list[int] = []
    for run_id_, picked, kept, last_id, served, per_run, item_id in rows:
        if item_id is not None:
            rest.append(item_id)
            continue
        out.window += kept
        out.served += served
        if served:
            out.run_ids.add(run_id_)
        # this process's next window there starts after this one; at the queue's end, at its start
        if kept:
            HINTS.learn(run_id_, last_id=last_id, full=kept < picked or picked == per_run)
        else:  # all of it beyond the cut: its next window starts where this one did
            HINTS.learn(run_id_, last_id=hints.get(run_id_, 1) - 1, full=True)
    if rest:
        out.items = sorted(RunItem.objects.filter(id__in=rest).select_related("run"), key=lambda i: (i.position, i.id))
    return out


def _cached_claim(runs, out: Swept, *, limit: int, now: dt.datetime, worker_id: str, pg: bool,
                  moved: list[str]) -> None:
    due = Q(not_before__isnull=True) | Q(not_before__lte=now)
    run_rows = {r[0]: r for r in runs.values_list("run_id", "policy_force", "created_at",
                                                  "policy_retry_sanitized", "started_at")}
    if not run_rows:
        return
    per_run = _per_run(limit, len(run_rows))
    fetched: dict[str, list[tuple]] = {}
    for rid in sorted(run_rows):
        picked = (RunItem.objects.filter(run_id=rid, status=ItemStatus.QUEUED, id__gte=HINTS.start(rid))
                  .filter(due).order_by("id"))
        if pg:  # another worker's window or claim is skipped, never waited for
            picked = picked.select_for_update(skip_locked=True)
        fetched[rid] = list(picked.values_list(*_WINDOW_COLUMNS)[:per_run])
    window = sorted((row for rows in fetched.values() for row in rows), key=lambda row: row[0])[:limit]
    last = window[-1][0] if window else 0
    for rid, rows in fetched.items():  # a run's next window starts after what this one kept of it
        kept = [row for row in rows if row[0] <= last]
        cut = len(kept) < len(rows)
        # at once, not at the commit: this process's next window, on another thread, starts after this one
        HINTS.learn(rid, last_id=kept[-1][0] if kept else (rows[0][0] - 1 if rows else None),
                    full=cut or len(rows) == per_run)
        moved.append(rid)
    if not window:
        return
    out.window = len(window)

    def may_serve(row: tuple) -> bool:
        _, rid, _, sig, sanitized, has_unit, reason = row
        retries = has_unit and run_rows[rid][3] and sanitized and sanitized != sig
        return reason == AttemptReason.PRIMARY and not retries

    candidates = [row for row in window if may_serve(row)]
    keys = {cache_key(row[3]) for row in candidates}
    entries = {  # signature -> (entry id, call id, created_at, last_seen)
        sig: (eid, call_id, created, seen)
        for sig, eid, call_id, created, seen in CacheEntry.objects.filter(
            provider=PROVIDER, idempotency_key__in=list(keys), ttl_expires_at__gt=now,
            provider_call_id__isnull=False,
        ).values_list("signature", "id", "provider_call_id", "created_at", "last_seen")
    } if keys else {}
    with_entry = [row for row in candidates if row[3] in entries]
    carried = dict(Lead.objects.filter(lead_id__in=list({row[2] for row in with_entry}))
                   .values_list("lead_id", "provider_call_id")) if with_entry else {}
    served: list[tuple] = []
    for row in with_entry:
        eid, call_id, created, _ = entries[row[3]]
        force, run_created = run_rows[row[1]][1], run_rows[row[1]][2]
        if carried.get(row[2]) == call_id and not (force and created < run_created):
            served.append((row, call_id))
    served_ids = {row[0] for row, _ in served}
    rest = [row[0] for row in window if row[0] not in served_ids]

    if served:
        update_rows(RunItem, [
            SimpleNamespace(id=row[0], status=ItemStatus.DONE, cached=True, stale=False, provider_call_id=call_id,
                            lease_until=None, last_error=None, updated_at=now, worker_id=worker_id[:64])
            for row, call_id in served
        ], ["status", "cached", "stale", "provider_call", "lease_until", "last_error", "updated_at", "worker_id"])
        leads_by_run: dict[str, set[str]] = defaultdict(set)
        for row, _ in served:
            leads_by_run[row[1]].add(row[2])
        for rid, lead_ids in leads_by_run.items():  # the provenance only: phones and emails stay
            Lead.objects.filter(lead_id__in=list(lead_ids)).update(
                source=CONTACTS_SOURCE, cached=True, stale=False, run_id=rid, contacts_updated_at=now,
                updated_at=now,
            )
        cutoff = now - dt.timedelta(seconds=LAST_SEEN_RESOLUTION_S)
        seen = {entries[row[3]][0] for row, _ in served
                if entries[row[3]][3] is None or entries[row[3]][3] < cutoff}
        if seen:
            CacheEntry.objects.filter(id__in=list(seen)).update(last_seen=now)
        out.served = len(served)
        out.run_ids = set(leads_by_run)
    if rest:
        lease = now + dt.timedelta(seconds=lease_seconds())
        RunItem.objects.filter(id__in=rest).update(status=ItemStatus.IN_FLIGHT, lease_until=lease, updated_at=now,
                                                   worker_id=worker_id[:64])
        out.items = sorted(RunItem.objects.filter(id__in=rest).select_related("run"),
                           key=lambda i: (i.position, i.id))
    unstarted = [rid for rid in {row[1] for row in window} if run_rows[rid][4] is None]
    if unstarted:
        Run.objects.filter(run_id__in=unstarted, started_at__isnull=True).update(started_at=now)
        for item in out.items:
            if item.run_id in unstarted and item.run.started_at is None:
                item.run.started_at = now
