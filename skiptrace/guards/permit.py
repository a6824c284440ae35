"""The gate right before the POST: a slot, then a rate permit, then a last look at the breaker and
the lease; a batch that may not go is given back (``NotSent``) with nothing billed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator

from django.conf import settings

from skiptrace.dbconn import release_connection
from skiptrace.guards import breaker, rate, slots

Clock = Callable[[], dt.datetime]

log = logging.getLogger("convexa.guards")


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
    from skiptrace.money import lease_seconds

    return reserved_at + lease_seconds() - settings.PROVIDER_TIMEOUT_S - 5.0


def last_look(*, now: dt.datetime, deadline: float, probe: bool) -> None:
    """Right before the POST, after every wait: raise NotSent when the breaker is no longer closed
    (unless this batch is the breaker's probe) or the send deadline has passed."""
    if time.monotonic() > deadline:
        raise NotSent("lease")
    if not probe and breaker.breaker_state(now, seen=slots.breaker_at_take()) != "closed":
        raise NotSent("circuit_open", retry_after=breaker.breaker_retry_after(now) or settings.CIRCUIT_PROBE_INTERVAL_S)


@contextlib.contextmanager
def send_permit(
    batch_id: str, *, clock: Clock, lease_s: float, deadline: float | None = None,
    sleep: Callable[[float], None] = time.sleep, before_permit: Callable[[], None] | None = None,
) -> Iterator[set[int]]:
    """Wait for a concurrency slot, then (after ``before_permit``, the last look) a rate permit,
    then let the request go.

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
    while (sent := slots.slot_try_take(batch_id, now=clock(), lease_s=lease_s)) is None:
        if time.monotonic() > deadline:
            raise NotSent("lease")
        release_connection()  # waiting for a slot holds no pooled connection
        sleep(0.05)
    if before_permit is not None:
        # The last look (breaker, lease; it may raise NotSent) comes before the rate permit, not
        # after it: a permit must leave within milliseconds, and a database round trip between the
        # two would age it past PERMIT_MAX_AGE_S with PostgreSQL a few milliseconds away.
        before_permit()
    release_connection()  # waiting for a rate permit holds no pooled connection (the limiter has its own)
    try:
        while not rate.rate_acquire(timeout_s=max(0.0, min(60.0, deadline - time.monotonic()))):
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
