"""Guards on the money path, each shared by every worker process on every host.

- **budget**: today's spend is ``SUM(provider_calls.cost_cents)`` of the day plus the worst-case
  estimate of calls still open. The sum is the truth (every cent traceable to a call row); a row
  lock on ``skiptrace_guards(name='budget')`` serializes reservations on PostgreSQL, and SQLite's
  IMMEDIATE transactions serialize them anyway.
- **circuit breaker**: closed -> open -> half-open, its state in ``skiptrace_guards(name='breaker')``,
  the error rate computed over the last ``CIRCUIT_MIN_SAMPLES`` finished provider requests.
- **concurrency gate**: provider requests in flight = distinct ``batch_id`` of calls in state
  ``sent`` with a live lease, checked and taken under the same lock, fleet-wide.
- **rate limit**: pyrate-limiter 4 (SQLite bucket with its file lock on one host, Postgres
  bucket on PostgreSQL), one permit per provider HTTP request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import random
import threading
import time
import zoneinfo
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

log = logging.getLogger("convexa.guards")

Clock = Callable[[], dt.datetime]

# --- budget --------------------------------------------------------------------------------------


def budget_day(now: dt.datetime) -> dt.date:
    """The calendar day (in SKIP_TRACE_BUDGET_TZ) whose cap a call counts against."""
    return now.astimezone(zoneinfo.ZoneInfo(settings.SKIP_TRACE_BUDGET_TZ)).date()


def seconds_to_next_budget_day(now: dt.datetime) -> int:
    tz = zoneinfo.ZoneInfo(settings.SKIP_TRACE_BUDGET_TZ)
    local = now.astimezone(tz)
    tomorrow = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return max(1, int((tomorrow - local).total_seconds()) + 1)


def budget_spent_cents(day: dt.date) -> int:
    """Spend of a budget day: actual cost of settled calls plus the estimate of open ones."""
    from skiptrace.models import OPEN_CALL_STATES, ProviderCall

    calls = ProviderCall.objects.filter(budget_day=day)
    settled = calls.exclude(state__in=OPEN_CALL_STATES).aggregate(s=Sum("cost_cents"))["s"] or 0
    open_ = calls.filter(state__in=OPEN_CALL_STATES).aggregate(s=Sum("estimate_cents"))["s"] or 0
    return settled + open_


def budget_spent_cents_today(now: dt.datetime | None = None) -> int:
    return budget_spent_cents(budget_day(now or timezone.now()))


def _lock_row(name: str) -> None:
    """Serialize a check-then-act across processes: a row lock on PostgreSQL (SQLite is serial)."""
    from skiptrace.models import GuardState

    if connection.vendor == "postgresql":
        GuardState.objects.get_or_create(name=name)
        GuardState.objects.select_for_update().get(name=name)


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
    _lock_row("budget")
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

    if budget_exhausted(now):
        return 0
    resumed = Run.objects.filter(soft_paused=True, reason="daily_budget", finished_at__isnull=True).update(
        soft_paused=False, reason=None
    )
    if resumed:
        from skiptrace.wakeup import notify_work

        notify_work()  # workers on other hosts go on at once, not at their next poll
        log.info("budget has room again: %d paused runs resume", resumed)
    return resumed


# --- circuit breaker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BreakerDecision:
    allowed: bool
    state: str
    retry_after: float = 0.0
    probe: bool = False


def _breaker_row():
    from skiptrace.models import GuardState

    row, _ = GuardState.objects.get_or_create(name="breaker")
    return row


def breaker_state(now: dt.datetime | None = None) -> str:
    """``closed`` | ``open`` | ``half_open`` (open whose probe time has come)."""
    from skiptrace.models import GuardState

    row = GuardState.objects.filter(name="breaker").first()
    if row is None or row.state == "closed":
        return "closed"
    now = now or timezone.now()
    if row.next_probe_at is not None and row.next_probe_at <= now:
        return "half_open"
    return "open"


def breaker_check(now: dt.datetime) -> BreakerDecision:
    """May a provider request go now? Closed: yes. Open: no, until the probe time, when exactly
    one request fleet-wide wins the probe (a conditional update moves ``next_probe_at`` forward)."""
    from skiptrace.models import GuardState

    row = GuardState.objects.filter(name="breaker").first()
    if row is None or row.state == "closed":
        return BreakerDecision(True, "closed")
    interval = settings.CIRCUIT_PROBE_INTERVAL_S
    if row.next_probe_at is not None and row.next_probe_at > now:
        return BreakerDecision(False, "open", retry_after=(row.next_probe_at - now).total_seconds())
    won = GuardState.objects.filter(name="breaker", state="open", next_probe_at=row.next_probe_at).update(
        next_probe_at=now + dt.timedelta(seconds=interval), probe_until=now + dt.timedelta(seconds=interval), updated_at=now
    )
    if won:
        log.warning("circuit half-open: probe request allowed (next probe in %ss)", interval)
        return BreakerDecision(True, "half_open", probe=True)
    return BreakerDecision(False, "open", retry_after=interval)


def breaker_retry_after(now: dt.datetime) -> float:
    from skiptrace.models import GuardState

    row = GuardState.objects.filter(name="breaker").first()
    if row is None or row.state == "closed" or row.next_probe_at is None:
        return 0.0
    return max(0.0, (row.next_probe_at - now).total_seconds())


_FAILURE_KINDS = {"http_5xx", "rate_limited", "timeout", "connection", "auth", "unreadable", "out_of_credits"}
_OPEN_AT_ONCE = {"auth", "out_of_credits"}  # a credential problem fails closed at the first answer


def breaker_record(*, ok: bool, now: dt.datetime, kind: str) -> str:
    """Record one finished provider request and move the breaker; returns the new state.

    The window is the last CIRCUIT_MIN_SAMPLES requests (one sample per provider HTTP request:
    the latest call row of each batch), so no extra table is needed.
    """
    from skiptrace.models import GuardState

    failure = (not ok) and kind in _FAILURE_KINDS
    _record_sample(failure, now)
    with transaction.atomic():
        _lock_row("breaker")
        row = _breaker_row()
        if row.state == "open":
            if not failure:
                GuardState.objects.filter(name="breaker").update(
                    state="closed", opened_at=None, next_probe_at=None, probe_until=None, updated_at=now
                )
                log.warning("circuit closed: probe succeeded")
                return "closed"
            return "open"
        if not failure:
            return "closed"
        samples, failures = _window()
        rate = failures / samples if samples else 0.0
        if kind in _OPEN_AT_ONCE or (samples >= settings.CIRCUIT_MIN_SAMPLES and rate >= settings.CIRCUIT_BREAKER_ERROR_RATE):
            GuardState.objects.filter(name="breaker").update(
                state="open", opened_at=now, updated_at=now,
                next_probe_at=now + dt.timedelta(seconds=settings.CIRCUIT_PROBE_INTERVAL_S),
            )
            log.warning("circuit opened: %s; error rate %.2f over %d requests; next probe in %ss",
                        kind, rate, samples, settings.CIRCUIT_PROBE_INTERVAL_S)
            return "open"
    return "closed"


def breaker_reset(now: dt.datetime | None = None) -> None:
    from skiptrace.models import GuardState

    GuardState.objects.filter(name="breaker").update(
        state="closed", opened_at=None, next_probe_at=None, probe_until=None, updated_at=now or timezone.now()
    )
    _samples_clear()


def _record_sample(failure: bool, now: dt.datetime) -> None:
    from skiptrace.models import BreakerSample

    BreakerSample.objects.create(failure=failure, at=now)
    keep = settings.CIRCUIT_MIN_SAMPLES
    cutoff = BreakerSample.objects.order_by("-id").values_list("id", flat=True)[keep : keep + 1]
    cutoff = list(cutoff)
    if cutoff:
        BreakerSample.objects.filter(id__lte=cutoff[0]).delete()


def _window() -> tuple[int, int]:
    from skiptrace.models import BreakerSample

    rows = list(BreakerSample.objects.order_by("-id").values_list("failure", flat=True)[: settings.CIRCUIT_MIN_SAMPLES])
    return len(rows), sum(1 for f in rows if f)


def _samples_clear() -> None:
    from skiptrace.models import BreakerSample

    BreakerSample.objects.all().delete()


def provider_status() -> str:
    """``ready`` | ``circuit_open`` | ``not_configured`` for /api/health."""
    if not settings.BATCHDATA_API_TOKEN:
        return "not_configured"
    return "circuit_open" if breaker_state() != "closed" else "ready"


# --- backoff -------------------------------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for transient provider errors: 2, 4, 8 ... capped at 5 min."""
    base = min(300.0, 2.0 ** max(1, attempt))
    return base * (0.8 + 0.4 * random.random())


def rate_limited_backoff() -> float:
    return backoff_seconds(2)


# --- concurrency gate and rate limit ---------------------------------------------------------------

_limiter_lock = threading.Lock()
_limiter = None


def _rate_limiter():
    """One pyrate-limiter per process, its bucket shared by every process through the database."""
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = _build_limiter()
        return _limiter


def _build_limiter():
    from pyrate_limiter import Duration, Limiter, Rate

    rps = settings.SKIP_TRACE_RPS
    # A 50 ms margin on the window: a permit taken at t and a request arriving at the provider up
    # to 50 ms later (thread scheduling, connection set-up) must still fit the provider's own 1 s
    # windows. It costs ~5 % of throughput; BatchData's 3,000/min account limit is far above RPS.
    margin_ms = 50
    if float(rps).is_integer():
        rate = Rate(int(rps), Duration.SECOND + margin_ms)
    else:
        rate = Rate(1, int(1000 / rps) + margin_ms)
    if connection.vendor == "postgresql":
        from psycopg_pool import ConnectionPool
        from pyrate_limiter import PostgresBucket

        db = settings.DATABASES["default"]
        conninfo = f"host={db.get('HOST') or 'localhost'} port={db.get('PORT') or 5432} dbname={connection.settings_dict['NAME']} user={db.get('USER') or 'postgres'}"
        if db.get("PASSWORD"):
            conninfo += f" password={db['PASSWORD']}"
        # Not autocommit: the bucket's LOCK TABLE must run inside the transaction that
        # pool.connection() opens and commits.
        pool = ConnectionPool(conninfo, min_size=1, max_size=2, open=True)  # one asking thread at a time
        bucket = PostgresBucket(pool, "convexa_provider", [rate])
        bucket.convexa_pool = pool
    else:
        from pyrate_limiter import SQLiteBucket

        path = str(settings.DATA_DIR / f"ratelimit-{connection.settings_dict['NAME'].rsplit('/', 1)[-1]}.sqlite")
        bucket = SQLiteBucket.init_from_file([rate], table="provider_requests", db_path=path, use_file_lock=True)
    return Limiter(bucket, buffer_ms=20)


def reset_rate_limiter() -> None:
    """Forget the process's limiter (tests that change SKIP_TRACE_RPS)."""
    global _limiter
    with _limiter_lock:
        if _limiter is not None:
            for bucket in _limiter.buckets():
                pool = getattr(bucket, "convexa_pool", None)
                if pool is not None:
                    pool.close()
        _limiter = None


_acquire_lock = threading.Lock()
_permit = threading.local()  # when this thread asked for its last permit (time.monotonic())
# A permit must be used at once: the window's 50 ms margin is all the lag it may have between the
# limiter's clock reading (somewhere after the ask) and the request reaching the provider. On an
# overloaded host a thread was seen to wait 69 ms between its permit and its POST (not scheduled),
# and permits were granted up to 68 ms after the ask; the provider saw 5 requests within 1 s.
# Older than this just before the POST, counted from the ask, the permit is left unused (it still
# counts in the window, so this only ever sends later) and another is taken, up to
# PERMIT_REFRESHES times.
PERMIT_MAX_AGE_S = 0.025
PERMIT_REFRESHES = 3


def rate_acquire(timeout_s: float = 60.0) -> bool:
    """Block until a provider request may start under SKIP_TRACE_RPS (fleet-wide).

    One thread of a process asks the limiter at a time (see PERMIT_MAX_AGE_S for why the time
    between ask and grant matters): no thread waits for a pooled connection between the limiter's
    clock reading and its insert, and the database sees one attempt per process at a time.
    """
    limiter = _rate_limiter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with _acquire_lock:
            asked = time.monotonic()
            if limiter.try_acquire("batchdata", blocking=False):
                _permit.asked_at = asked
                return True
        time.sleep(0.02)
    return False


def rate_permit_fresh(max_age_s: float = PERMIT_MAX_AGE_S) -> None:
    """Called right before the POST: while this thread's permit is older than ``max_age_s``
    (counted from when it was asked for), take another, at most PERMIT_REFRESHES times. Never
    raises: should the limiter fail now, the request goes on the permit it has."""
    for _ in range(PERMIT_REFRESHES):
        asked_at = getattr(_permit, "asked_at", None)
        if asked_at is None or time.monotonic() - asked_at <= max_age_s:
            return
        log.info("rate permit %.0f ms old before its request left; taking a fresh one",
                 1000 * (time.monotonic() - asked_at))
        try:
            if not rate_acquire():
                log.warning("no fresh rate permit within 60 s; the request goes on its old permit")
                return
        except Exception:  # the old permit was valid when granted
            log.warning("the rate limiter failed while refreshing a permit; the request goes on its old one",
                        exc_info=True)
            return


def slot_try_take(batch_id: str, *, now: dt.datetime, lease_s: float) -> set[int] | None:
    """Take a concurrency slot: mark this batch's calls ``sent`` iff fewer than
    SKIP_TRACE_CONCURRENCY requests are in flight fleet-wide. One transaction under the lock.

    Returns None when no slot is free, else the ids of the calls now ``sent``: only those still
    ``reserved`` with a live lease (a reservation the reaper took back, or may take back at any
    moment, must not leave)."""
    from skiptrace.models import CallState, ProviderCall

    with transaction.atomic():
        _lock_row("slots")
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


class NotSent(Exception):  # noqa: N818 - it is an outcome, not a failure of the code
    """The batch is given back before its POST: nothing left, nothing is billed.

    ``reason``: ``circuit_open`` (the breaker opened while the batch waited) or ``lease`` (the
    waits ran so long that the calls' lease could be reaped before the answer is back)."""

    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def send_deadline(reserved_at: float) -> float:
    """The last ``time.monotonic()`` at which a batch reserved at ``reserved_at`` may still send:
    its answer (up to PROVIDER_TIMEOUT_S) must be back, with 5 s to record it, before the lease
    taken at the reservation runs out and the reaper could settle its calls and items."""
    from skiptrace.service import lease_seconds

    return reserved_at + lease_seconds() - settings.PROVIDER_TIMEOUT_S - 5.0


def last_look(*, now: dt.datetime, deadline: float, probe: bool) -> None:
    """Right before the POST, after every wait: raise NotSent when the breaker is no longer closed
    (unless this batch is the breaker's probe) or the send deadline has passed."""
    if time.monotonic() > deadline:
        raise NotSent("lease")
    if not probe and breaker_state(now) != "closed":
        raise NotSent("circuit_open", retry_after=breaker_retry_after(now) or settings.CIRCUIT_PROBE_INTERVAL_S)


@contextlib.contextmanager
def send_permit(
    batch_id: str, *, clock: Clock, lease_s: float, deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[set[int]]:
    """Wait for a concurrency slot, then a rate permit, then let the request go.

    Taking the slot marks the batch ``sent`` (committed), so the rows exist before anything can
    leave. The rate permit comes last so that the request reaches the provider within
    milliseconds of its permit (a permit taken before a slot wait would let requests bunch up
    beyond RPS). Both waits end at ``deadline`` (``time.monotonic()``; see ``send_deadline``) with
    NotSent("lease"). Should the limiter itself fail, or a wait run out, the calls go back to
    ``errored``: not sent. The slot frees itself when the calls leave state ``sent``. Yields the
    ids of the calls that may be sent.
    """
    from skiptrace.models import CallState, ProviderCall

    deadline = time.monotonic() + 3600.0 if deadline is None else deadline
    while (sent := slot_try_take(batch_id, now=clock(), lease_s=lease_s)) is None:
        if time.monotonic() > deadline:
            raise NotSent("lease")
        sleep(0.05)
    try:
        while not rate_acquire(timeout_s=max(0.0, min(60.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                raise NotSent("lease")
            log.warning("waited 60s for a rate permit; still waiting")
    except Exception as exc:
        why = "the send deadline passed while waiting for a rate permit" if isinstance(exc, NotSent) \
            else "the rate limiter failed"
        ProviderCall.objects.filter(batch_id=batch_id, state=CallState.SENT).update(
            state=CallState.ERRORED, cost_cents=0, error_text=f"not sent: {why}", lease_until=None, sent_at=None
        )
        raise
    yield sent
