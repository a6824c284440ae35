"""The budget guard: today's spend against the daily cap, a run's spend against the per-run cap.

The caps live in the database (``BudgetSetting``, one row, changed in the console and audited);
without a row the environment gives the first value (``SKIP_TRACE_DAILY_BUDGET_CENTS``, no per-run
cap unless ``SKIP_TRACE_RUN_BUDGET_CENTS`` is set). ``budget_caps`` reads them on every call, so
every worker on every host uses the current caps (no restart, no stale cap).

Today's spend is ``SUM(provider_calls.cost_cents)`` of the day plus the worst-case estimate of calls
still open; a run's spend is the same sum over its calls (every day). The sum is the truth (every
cent traceable to a call row); a row lock on ``skiptrace_guards(name='budget')`` serializes
reservations on PostgreSQL, and SQLite's IMMEDIATE transactions serialize them anyway.
``budget_cut`` decides which new calls both caps pay for; ``budget_unpause`` lets runs waiting for
either budget go on when there is room again.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from skiptrace.guards.locks import lock_row

log = logging.getLogger("convexa.guards")


def budget_day(now: dt.datetime) -> dt.date:
    """The calendar day (in SKIP_TRACE_BUDGET_TZ) whose cap a call counts against."""
    return now.astimezone(zoneinfo.ZoneInfo(settings.SKIP_TRACE_BUDGET_TZ)).date()


def seconds_to_next_budget_day(now: dt.datetime) -> int:
    tz = zoneinfo.ZoneInfo(settings.SKIP_TRACE_BUDGET_TZ)
    local = now.astimezone(tz)
    tomorrow = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return max(1, int((tomorrow - local).total_seconds()) + 1)


def next_budget_day_start(now: dt.datetime) -> dt.datetime:
    """When the next budget day begins (midnight in SKIP_TRACE_BUDGET_TZ), as an aware UTC time."""
    tz = zoneinfo.ZoneInfo(settings.SKIP_TRACE_BUDGET_TZ)
    local = now.astimezone(tz)
    return dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.UTC)


class BudgetCaps(NamedTuple):
    daily_cents: int
    run_cents: int | None  # None: no per-run cap
    stored: bool  # False: no row yet, the environment's values


def env_caps() -> BudgetCaps:
    """The environment's caps: the first value while no ``BudgetSetting`` row exists."""
    run = getattr(settings, "SKIP_TRACE_RUN_BUDGET_CENTS", None)
    return BudgetCaps(int(settings.SKIP_TRACE_DAILY_BUDGET_CENTS), None if run is None else int(run), False)


def budget_caps() -> BudgetCaps:
    """The current caps, read from the database on every call (one indexed query)."""
    from skiptrace.models import BudgetSetting

    return caps_of(BudgetSetting.objects.filter(pk=BudgetSetting.SINGLETON).values_list(
        "daily_cap_cents", "run_cap_cents").first())


def caps_of(row: tuple[int, int | None] | None) -> BudgetCaps:
    """The caps of the ``BudgetSetting`` row's ``(daily_cap_cents, run_cap_cents)``, or of the
    environment when there is no row (None)."""
    if row is None:
        return env_caps()
    return BudgetCaps(row[0], row[1], True)


def daily_cap_cents() -> int:
    return budget_caps().daily_cents


def run_spent_cents(run_ids: Iterable[str]) -> dict[str, int]:
    """Each run's spend: settled cost of its calls plus the worst-case estimate of its open calls."""
    from django.db.models import Q

    from skiptrace.models import OPEN_CALL_STATES, ProviderCall

    ids = {r for r in run_ids if r}
    if not ids:
        return {}
    rows = (
        ProviderCall.objects.filter(run_id__in=ids).values("run_id")
        .annotate(settled=Sum("cost_cents", filter=~Q(state__in=OPEN_CALL_STATES)),
                  open_=Sum("estimate_cents", filter=Q(state__in=OPEN_CALL_STATES)))
    )
    spent = dict.fromkeys(ids, 0)
    for row in rows:
        spent[row["run_id"]] = (row["settled"] or 0) + (row["open_"] or 0)
    return spent


def budget_spent_cents(day: dt.date) -> int:
    """Spend of a budget day: actual cost of settled calls plus the estimate of open ones.

    PostgreSQL: the sum of the day's ``BudgetDelta`` rows (kept by a trigger on the calls; a few
    rows, however many calls the day has). SQLite: the aggregate over the day's calls."""
    from django.db import connection

    from skiptrace.models import OPEN_CALL_STATES, BudgetDelta, ProviderCall

    if connection.vendor == "postgresql":
        return int(BudgetDelta.objects.filter(budget_day=day).aggregate(s=Sum("cents"))["s"] or 0)
    calls = ProviderCall.objects.filter(budget_day=day)
    settled = calls.exclude(state__in=OPEN_CALL_STATES).aggregate(s=Sum("cost_cents"))["s"] or 0
    open_ = calls.filter(state__in=OPEN_CALL_STATES).aggregate(s=Sum("estimate_cents"))["s"] or 0
    return settled + open_


def budget_spent_cents_today(now: dt.datetime | None = None) -> int:
    return budget_spent_cents(budget_day(now or timezone.now()))


def budget_left_cents(now: dt.datetime) -> int:
    """What today's cap has left (never below 0)."""
    return max(0, daily_cap_cents() - budget_spent_cents(budget_day(now)))


def budget_fit(n_calls: int, *, now: dt.datetime) -> int:
    """How many of ``n_calls`` new calls today's budget pays for if every record matches (the daily
    cap only; ``budget_cut`` also holds the per-run cap).

    Must run inside the transaction that inserts those calls (it takes the budget lock), so the
    check and the reservation are one atomic step for the whole fleet.
    """
    if n_calls <= 0:
        return 0
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if price <= 0:
        return n_calls
    lock_row("budget")
    remaining = daily_cap_cents() - budget_spent_cents(budget_day(now))
    return max(0, min(n_calls, remaining // price))


@dataclass
class BudgetCut:
    """Positions (in the order given to ``budget_cut``) of the new calls that fit both caps, that
    the daily cap stops, and that their run's cap stops."""

    fit: list[int] = field(default_factory=list)
    over_day: list[int] = field(default_factory=list)
    over_run: list[int] = field(default_factory=list)


def budget_cut(run_ids: Sequence[str | None], *, now: dt.datetime) -> BudgetCut:
    """Which new calls (one per entry, charged to the run named) the daily cap and the per-run cap
    pay for if every record matches, in order: a call fits when today's spend and its run's spend
    (settled + open worst case) both stay within their caps after it.

    Like ``budget_fit``, must run inside the transaction that inserts those calls (budget lock).
    """
    cut = BudgetCut()
    if not run_ids:
        return cut
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if price <= 0:
        cut.fit = list(range(len(run_ids)))
        return cut
    lock_row("budget")
    caps = budget_caps()
    day_left = caps.daily_cents - budget_spent_cents(budget_day(now))
    run_left: dict[str, int] = {}
    if caps.run_cents is not None:
        run_left = {r: caps.run_cents - spent for r, spent in run_spent_cents(run_ids).items()}
    for pos, run_id in enumerate(run_ids):
        if run_id in run_left and run_left[run_id] < price:
            cut.over_run.append(pos)
        elif day_left < price:
            cut.over_day.append(pos)
        else:
            cut.fit.append(pos)
            day_left -= price
            if run_id in run_left:
                run_left[run_id] -= price
    return cut


def run_cap_pause(run_ids: Iterable[str]) -> int:
    """Runs that reached the per-run cap wait for it (unless they have an override)."""
    from skiptrace.models import Run
    from skiptrace.states import WaitReason

    ids = {r for r in run_ids if r}
    if not ids:
        return 0
    paused = Run.objects.filter(run_id__in=ids, override_budget=False, finished_at__isnull=True).update(
        soft_paused=True, reason=WaitReason.RUN_BUDGET)
    if paused:
        log.warning("per-run cap reached: %d runs wait runs=%s", paused, ",".join(sorted(ids)))
    return paused


def run_budget_left_cents(run_id: str, caps: BudgetCaps | None = None) -> int | None:
    """What the per-run cap has left for this run (None: no per-run cap)."""
    caps = caps or budget_caps()
    if caps.run_cents is None:
        return None
    return max(0, caps.run_cents - run_spent_cents([run_id]).get(run_id, 0))


def budget_exhausted(now: dt.datetime) -> bool:
    """No new call fits today (what makes new runs and single-lead calls answer 429)."""
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if price <= 0:
        return False
    return daily_cap_cents() - budget_spent_cents(budget_day(now)) < price


def budget_unpause(now: dt.datetime) -> int:
    """A new budget day (or a raised cap) lets runs paused for the budget go on by themselves; a
    raised or removed per-run cap lets the runs that reached it go on."""
    from skiptrace.models import Run
    from skiptrace.states import WaitReason

    resumed = 0
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    run_waiting = list(Run.objects.budget_waiting().filter(reason=WaitReason.RUN_BUDGET)
                       .values_list("run_id", flat=True))
    if run_waiting:
        caps = budget_caps()
        if caps.run_cents is None or price <= 0:
            room = run_waiting
        else:
            room = [r for r, spent in run_spent_cents(run_waiting).items() if caps.run_cents - spent >= price]
        if room:
            # the daily budget decides next: if it is spent too, they wait for the next budget day
            daily = budget_exhausted(now)
            resumed += Run.objects.budget_waiting().filter(run_id__in=room, reason=WaitReason.RUN_BUDGET).update(
                soft_paused=daily, reason=WaitReason.DAILY_BUDGET if daily else None)
            if daily:
                resumed = 0
    if budget_exhausted(now):
        return resumed
    # Every daily budget wait, whatever else is true of the run: an operator's pause is its own
    # column and stays; a provider wait recorded meanwhile stays too. A per-run cap wait stays.
    with transaction.atomic():
        resumed += Run.objects.budget_waiting().filter(reason=WaitReason.DAILY_BUDGET).update(
            soft_paused=False, reason=None)
        resumed += Run.objects.budget_waiting().exclude(reason=WaitReason.RUN_BUDGET).update(soft_paused=False)
    if resumed:
        from skiptrace.wakeup import notify_work

        notify_work()  # workers on other hosts go on at once, not at their next poll
        log.info("budget has room again: %d paused runs resume", resumed)
    return resumed


FOLD_MIN_ROWS = 50


def budget_deltas_fold() -> int:
    """PostgreSQL housekeeping: replace each budget day's delta rows by one row of their sum, in one
    statement (what it deletes is exactly what it sums), so a day's spend stays a read of a few rows.
    Readers see the rows before or after it, never half. Returns the rows removed."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH days AS (SELECT budget_day FROM skiptrace_budget_deltas GROUP BY budget_day HAVING count(*) >= %s), "
            "gone AS (DELETE FROM skiptrace_budget_deltas d USING days WHERE d.budget_day = days.budget_day "
            "RETURNING d.budget_day, d.cents) "
            "INSERT INTO skiptrace_budget_deltas (budget_day, cents) SELECT budget_day, SUM(cents) FROM gone "
            "GROUP BY budget_day RETURNING (SELECT count(*) FROM gone)",
            [FOLD_MIN_ROWS],
        )
        rows = cursor.fetchall()
    return int(rows[0][0]) if rows else 0
