"""The circuit breaker: closed -> open -> half-open, fleet-wide.

Its state is ``skiptrace_guards(name='breaker')``; the error rate is computed over the last
``CIRCUIT_MIN_SAMPLES`` finished provider requests (``skiptrace_breaker_samples``). Which provider
error kinds count as failures, and which open it at once (credentials), is decided here.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from skiptrace.guards.locks import lock_row

log = logging.getLogger("convexa.guards")


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


def breaker_state(now: dt.datetime | None = None, *, seen: tuple[str, dt.datetime | None] | None = None) -> str:
    """``closed`` | ``open`` | ``half_open`` (open whose probe time has come). ``seen``: the row's
    ``(state, next_probe_at)`` as just read with another statement, instead of a query."""
    from skiptrace.models import GuardState

    if seen is None:
        row = GuardState.objects.filter(name="breaker").values_list("state", "next_probe_at").first()
        seen = row or ("closed", None)
    state, next_probe_at = seen
    if state == "closed":
        return "closed"
    now = now or timezone.now()
    if next_probe_at is not None and next_probe_at <= now:
        return "half_open"
    return "open"


def breaker_check(now: dt.datetime, *, seen: tuple[str, dt.datetime | None] | None = None) -> BreakerDecision:
    """May a provider request go now? Closed: yes. Open: no, until the probe time, when exactly
    one request fleet-wide wins the probe (a conditional update moves ``next_probe_at`` forward).
    ``seen``: the row's ``(state, next_probe_at)`` as just read with another statement."""
    from skiptrace.models import GuardState

    if seen is None:
        seen = GuardState.objects.filter(name="breaker").values_list("state", "next_probe_at").first() or ("closed", None)
    state, next_probe_at = seen
    if state == "closed":
        return BreakerDecision(True, "closed")
    interval = settings.CIRCUIT_PROBE_INTERVAL_S
    if next_probe_at is not None and next_probe_at > now:
        return BreakerDecision(False, "open", retry_after=(next_probe_at - now).total_seconds())
    won = GuardState.objects.filter(name="breaker", state="open", next_probe_at=next_probe_at).update(
        next_probe_at=now + dt.timedelta(seconds=interval), updated_at=now
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
    if not failure and connection.vendor == "postgresql":
        not_closed = _record_success_and_look(now)  # one round trip where the two were two
    else:
        _record_sample(failure, now)
        not_closed = failure or GuardState.objects.filter(name="breaker").exclude(state="closed").exists()
    if not failure and not not_closed:
        # A success while closed changes nothing: no fleet-wide lock (one per answer at 50 a
        # second, held for two round trips, was a queue of its own with PostgreSQL 10 ms away).
        return "closed"
    with transaction.atomic():
        lock_row("breaker")
        row = _breaker_row()
        if row.state == "open":
            if not failure:
                GuardState.objects.filter(name="breaker").update(
                    state="closed", opened_at=None, next_probe_at=None, updated_at=now
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
        state="closed", opened_at=None, next_probe_at=None, updated_at=now or timezone.now()
    )
    _samples_clear()


SAMPLE_TRIM_EVERY = 20


def _record_sample(failure: bool, now: dt.datetime) -> None:
    from skiptrace.models import BreakerSample

    _trim(BreakerSample.objects.create(failure=failure, at=now).pk)


def _trim(sample_id: int) -> None:
    """The window reads the newest CIRCUIT_MIN_SAMPLES rows; older ones are trimmed every 20th sample."""
    from skiptrace.models import BreakerSample

    if sample_id % SAMPLE_TRIM_EVERY:
        return
    keep = settings.CIRCUIT_MIN_SAMPLES
    cutoff = list(BreakerSample.objects.order_by("-id").values_list("id", flat=True)[keep : keep + 1])
    if cutoff:
        BreakerSample.objects.filter(id__lte=cutoff[0]).delete()


def _record_success_and_look(now: dt.datetime) -> bool:
    """PostgreSQL: a success's sample written and the breaker looked at in one statement (the
    sample trimmed every ``SAMPLE_TRIM_EVERY``th, as ``_record_sample``). True = not closed."""
    from skiptrace.models import BreakerSample, GuardState

    samples, guards = BreakerSample._meta.db_table, GuardState._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH s AS (INSERT INTO {samples} (failure, at) VALUES (false, %s) RETURNING id) "
            f"SELECT (SELECT id FROM s), EXISTS (SELECT 1 FROM {guards} WHERE name = 'breaker' AND state <> 'closed')",
            [now],
        )
        sample_id, not_closed = cursor.fetchone()
    _trim(sample_id)
    return bool(not_closed)


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
