"""Run counters, recounted (never incremented) from the items; a run finished exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from django.db import connection, transaction
from django.db.models import Count, Exists, OuterRef, Q

from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.selectors import run_money

log = logging.getLogger("convexa.service")


RunFinished = Callable[[str], None]
_finish_hooks: list[RunFinished] = []


def on_run_finished(hook: RunFinished) -> None:
    """Register what happens once when a run's last item settles (the report writer)."""
    if hook not in _finish_hooks:
        _finish_hooks.append(hook)


def clear_finish_hooks() -> None:
    """Forget the registered hooks (a benchmark's set-up must not write reports)."""
    _finish_hooks.clear()


# A run this small is recounted after every batch (the recount is a few milliseconds). A bigger one
# is recounted at most once per max(RECOUNT_MIN_INTERVAL_S, RECOUNT_SPACING x its last recount's
# cost), fleet-wide, so the recount never takes more than about 1/RECOUNT_SPACING of the database's
# time however big the run; in between, an indexed "anything left?" probe, which takes no lock,
# still finishes the run at once. Measured in docs/PERFORMANCE.md: a recount costs 73-128 ms for a
# 100,000-item run (1,000 batches), and 12-50 ms for 5,000 items on PostgreSQL, where recounting
# after every batch made three workers queue on the run's row lock for up to 0.7 s.
EXACT_RECOUNT_MAX_ITEMS = 1_000
RECOUNT_MIN_INTERVAL_S = 1.0
RECOUNT_SPACING = 10
STALE_COUNTERS_S = 30.0


def runs_refresh(run_ids: Iterable[str], *, now: dt.datetime, force: bool = False) -> list[str]:
    """Recount the runs' counters from their items (SQL aggregates) and finish runs with nothing left.

    Small runs are recounted every time; big ones when their recount is due or they have nothing
    left (see ``EXACT_RECOUNT_MAX_ITEMS``), unless ``force``. Counters are always a recount, never
    accumulated deltas, so they cannot drift. Returns the run ids this call finished; for each, the
    finish hooks run exactly once fleet-wide (the conditional update on ``finished_at IS NULL``
    picks one winner).
    """
    finished: list[str] = []
    for run_id in sorted(r for r in set(run_ids) if r):  # a transaction per run: never one run's lock while waiting for another's
        if force or _recount_wanted(run_id, now=now):  # read without a lock: most batches of a big run stop here
            finished += _recount_locked(run_id, now=now, force=force)
    for run_id in finished:
        log.info("run %s finished", run_id)
        for hook in _finish_hooks:
            try:
                hook(run_id)
            except Exception:  # the run is finished either way; a report can be re-made on demand
                log.exception("after-finish step failed for run %s", run_id)
    return finished


def runs_refresh_stale(*, now: dt.datetime) -> list[str]:
    """Recount unfinished big runs whose counters are older than STALE_COUNTERS_S (the worker's
    housekeeping). Between due recounts a big run's last batches may go uncounted when no batch
    follows them (an operator pause, a budget pause); this bounds how long."""
    stale = Run.objects.filter(
        finished_at__isnull=True, total__gt=EXACT_RECOUNT_MAX_ITEMS,
        counted_at__lt=now - dt.timedelta(seconds=STALE_COUNTERS_S),
    ).values_list("run_id", flat=True)
    return runs_refresh(list(stale), now=now, force=True)


def _recount_wanted(run_id: str, *, now: dt.datetime) -> bool:
    # whether anything is left comes with the counters (one round trip): a big run's batch that is
    # not due for a recount needs it
    left = RunItem.objects.filter(run_id=OuterRef("run_id"), status__in=(ItemStatus.QUEUED, ItemStatus.IN_FLIGHT))
    row = (Run.objects.filter(run_id=run_id).annotate(left=Exists(left))
           .values_list("total", "counted_at", "count_ms", "left").first())
    return row is not None and _recount_due(run_id, *row[:3], now=now, anything_left=row[3])


def _recount_locked(run_id: str, *, now: dt.datetime, force: bool) -> list[str]:
    with transaction.atomic():
        # Serialize recounts of a run: a recount that read before another batch committed must not
        # write its older numbers last (SQLite: the IMMEDIATE write lock; PostgreSQL: the row lock).
        run = Run.objects.filter(run_id=run_id).values_list("total", "counted_at", "count_ms")
        if connection.vendor == "postgresql":
            # Another worker recounting this run right now: do not queue behind it (each thread in
            # the queue held a pooled connection; with a 100,000-item run, whose recount takes a
            # few hundred ms, threads waited past the pool's 10 s). Its count or the next one takes
            # this batch in, unless this batch may have been the run's last: then wait and recount.
            row = None if force else run.select_for_update(skip_locked=True).first()
            if row is None and (force or not _anything_left(run_id)):
                row = run.select_for_update().first()
        else:
            row = run.first()
        if row is None:
            return []
        if not force and not _recount_due(run_id, *row, now=now):  # another worker recounted while we waited
            return []
        return _recount(run_id, now=now)


def _recount_due(run_id: str, total: int | None, counted_at: dt.datetime | None, count_ms: float, *,
                 now: dt.datetime, anything_left: bool | None = None) -> bool:
    if (total or 0) <= EXACT_RECOUNT_MAX_ITEMS or counted_at is None:
        return True
    spacing_s = max(RECOUNT_MIN_INTERVAL_S, RECOUNT_SPACING * count_ms / 1000)
    if not now - dt.timedelta(seconds=spacing_s) < counted_at <= now:  # due (or the clock went back)
        return True
    # Not due: only a run with nothing left to do needs its final count now.
    return not (_anything_left(run_id) if anything_left is None else anything_left)


def _anything_left(run_id: str) -> bool:
    return RunItem.objects.filter(run_id=run_id, status__in=(ItemStatus.QUEUED, ItemStatus.IN_FLIGHT)).exists()


def _recount(run_id: str, *, now: dt.datetime) -> list[str]:
    """Set one run's counters from its items; finish it when nothing is queued or in flight.
    Returns ``[run_id]`` when this call finished it (one winner fleet-wide), else ``[]``."""
    started = time.perf_counter()
    c: dict[str, int] = defaultdict(int)
    rows = (
        RunItem.objects.filter(run_id=run_id)
        .values("status")
        .annotate(n=Count("id"), n_cached=Count("id", filter=Q(cached=True, status=ItemStatus.DONE)),
                  n_fresh=Count("id", filter=Q(cached=False, status=ItemStatus.DONE, provider_call__isnull=False)))
    )
    for row in rows:
        c[row["status"]] += row["n"]
        c["cached"] += row["n_cached"]
        c["fresh"] += row["n_fresh"]
    money = run_money([run_id])[run_id]  # one aggregate over the run's calls (open calls cost 0 until settled)
    count_ms = 1000 * (time.perf_counter() - started)
    Run.objects.filter(run_id=run_id).update(
        total=sum(c[s] for s in ItemStatus.values), queued=c[ItemStatus.QUEUED], in_flight=c[ItemStatus.IN_FLIGHT],
        done=c[ItemStatus.DONE], failed=c[ItemStatus.FAILED], cache_hits=c["cached"], provider_served=c["fresh"],
        cost_cents=money["settled_cents"], counted_at=now, count_ms=round(count_ms, 2), counted_calls=money["provider_calls"],
        counted_requests=money["provider_requests"], counted_in_flight_cents=money["in_flight_cents"],
    )
    if c[ItemStatus.QUEUED] or c[ItemStatus.IN_FLIGHT]:
        return []
    if not Run.objects.filter(run_id=run_id, finished_at__isnull=True).update(finished_at=now, soft_paused=False, reason=None):
        return []
    Run.objects.filter(run_id=run_id, started_at__isnull=True).update(started_at=now)
    return [run_id]

