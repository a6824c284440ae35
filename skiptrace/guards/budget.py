"""The budget guard: today's spend against the cap.

Today's spend is ``SUM(provider_calls.cost_cents)`` of the day plus the worst-case estimate of calls
still open. The sum is the truth (every cent traceable to a call row); a row lock on
``skiptrace_guards(name='budget')`` serializes reservations on PostgreSQL, and SQLite's IMMEDIATE
transactions serialize them anyway. ``budget_unpause`` lets runs waiting for the budget go on.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo

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


def budget_spent_cents(day: dt.date) -> int:
    """Spend of a budget day: actual cost of settled calls plus the estimate of open ones."""
    from skiptrace.models import OPEN_CALL_STATES, ProviderCall

    calls = ProviderCall.objects.filter(budget_day=day)
    settled = calls.exclude(state__in=OPEN_CALL_STATES).aggregate(s=Sum("cost_cents"))["s"] or 0
    open_ = calls.filter(state__in=OPEN_CALL_STATES).aggregate(s=Sum("estimate_cents"))["s"] or 0
    return settled + open_


def budget_spent_cents_today(now: dt.datetime | None = None) -> int:
    return budget_spent_cents(budget_day(now or timezone.now()))


def budget_fit(n_calls: int, *, now: dt.datetime) -> int:
    """How many of ``n_calls`` new calls today's budget pays for if every record matches.

    Must run inside the transaction that inserts those calls (it takes the budget lock), so the
    check and the reservation are one atomic step for the whole fleet.
    """
    if n_calls <= 0:
        return 0
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if price <= 0:
        return n_calls
    lock_row("budget")
    remaining = settings.SKIP_TRACE_DAILY_BUDGET_CENTS - budget_spent_cents(budget_day(now))
    return max(0, min(n_calls, remaining // price))


def budget_exhausted(now: dt.datetime) -> bool:
    """No new call fits today (what makes new runs and single-lead calls answer 429)."""
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    if price <= 0:
        return False
    return settings.SKIP_TRACE_DAILY_BUDGET_CENTS - budget_spent_cents(budget_day(now)) < price


def budget_unpause(now: dt.datetime) -> int:
    """A new budget day (or a raised cap) lets runs paused for the budget go on by themselves."""
    from skiptrace.models import Run
    from skiptrace.states import WaitReason

    if budget_exhausted(now):
        return 0
    # Every budget wait, whatever else is true of the run: an operator's pause is its own column and
    # stays; a provider wait recorded meanwhile stays too.
    with transaction.atomic():
        resumed = Run.objects.budget_waiting().filter(reason=WaitReason.DAILY_BUDGET).update(
            soft_paused=False, reason=None)
        resumed += Run.objects.budget_waiting().update(soft_paused=False)
    if resumed:
        from skiptrace.wakeup import notify_work

        notify_work()  # workers on other hosts go on at once, not at their next poll
        log.info("budget has room again: %d paused runs resume", resumed)
    return resumed
