"""Steps 4-5, permits and the send: concurrency slot (calls ``sent``, committed), rate permit, a
last look at the breaker and the lease, one POST; then the answer or the error goes to ``record``,
retried on a transient database error for as long as the lease.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from django.db import OperationalError, connection

from skiptrace import guards
from skiptrace.dbconn import release_connection
from skiptrace.money import record
from skiptrace.money.items import BatchOutcome
from skiptrace.money.policy import Clock, lease_seconds
from skiptrace.money.reserve import Reserved
from skiptrace.money.trail import id_ranges, log_calls
from skiptrace.provider import BatchDataClient, ProviderError

log = logging.getLogger("convexa.service")


def batch_send(
    reserved: Reserved, *, client: BatchDataClient, clock: Clock, outcome: BatchOutcome, worker_id: str
) -> None:
    """Steps 7-10: permits, mark sent (committed), a last look at the breaker, one HTTP request,
    record the outcome."""
    try:
        # A request the provider would refuse never leaves. The body is made now, before the waits:
        # any work between the rate permit and the POST ages the permit (on a busy host, a
        # millisecond of CPU among 32 threads can take tens of milliseconds of wall time).
        prepared = client.encode_body(reserved.requests)
    except ValueError as exc:
        record.record_error(reserved, ProviderError("http_4xx", f"invalid request: {exc}", maybe_sent=False),
                        now=clock(), outcome=outcome)
        return
    deadline = guards.send_deadline(reserved.reserved_at)

    def before_permit() -> None:
        # After the slot wait, right before the rate permit: a breaker that opened while this batch
        # waited keeps it home, and so does a lease that could be reaped before the answer.
        guards.last_look(now=clock(), deadline=deadline, probe=reserved.probe)

    def before_send() -> None:
        # Immediately before the POST: no database round trip between the permit and the request.
        if time.monotonic() > deadline:
            raise guards.NotSent("lease")
        release_connection()  # the answer takes a second or more: no pooled connection waits with it
        guards.rate_permit_fresh(wait=False)  # a permit already too late is replaced now; its wait is at the write

    try:
        with guards.send_permit(reserved.batch_id, clock=clock, lease_s=lease_seconds(), deadline=deadline,
                                before_permit=before_permit) as sent_ids:
            count = len(reserved.requests)
            if not keep_only(reserved, sent_ids):
                return
            body = prepared if len(reserved.requests) == count else None  # some calls dropped: made again
            log.info("batch %s sent: provider_call_ids=%s runs=%s worker=%s", reserved.batch_id,
                     id_ranges([c.pk for c in reserved.calls]), ",".join(sorted({c.run_id or "-" for c in reserved.calls})),
                     worker_id)
            log_calls("sent", reserved.calls, worker=worker_id)
            try:
                try:
                    # the permit once more on the connection, right before the bytes are written
                    result = client.skip_trace(reserved.requests, before_send=before_send, request_json=body,
                                               before_write=guards.rate_permit_fresh)
                except (ProviderError, guards.NotSent):
                    raise
                except Exception as exc:  # a bug after sending: the answer is unknown, so it is "lost"
                    log.exception("unexpected error in provider request %s", reserved.batch_id)
                    raise ProviderError("connection", f"unexpected {exc.__class__.__name__}", maybe_sent=True) from exc
            except ProviderError as exc:
                retrying(lambda err=exc: record.record_error(reserved, err, now=clock(), outcome=outcome))
                breaker_sample(ok=False, now=clock(), kind=exc.kind)
                return
    except guards.NotSent as withheld:
        retrying(lambda w=withheld: record.withhold(reserved, w, now=clock(), outcome=outcome))
        return
    # The provider has answered (and billed): recording that answer must survive a busy database.
    retrying(lambda: record.record_answer(reserved, result.results, result.status_code, result.match_count,
                                      result.provider_request_id, now=clock(), outcome=outcome))
    breaker_sample(ok=True, now=clock(), kind="ok")


RECORD_RETRY_MAX_DELAY_S = 2.0


def retrying(
    record: Callable[[], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    give_up_after_s: float | None = None,
) -> None:
    """Run a recording transaction, retrying on a transient database error (SQLite busy past its
    timeout, e.g. behind a big upload; a PostgreSQL restart). Each attempt is one whole
    transaction, so a retry never half-applies.

    A paid answer is worth waiting for: attempts go on (backing off to every 2 s) for as long as the
    calls' lease (``lease_seconds()``), not a fixed count. Past it the reaper settles the calls as
    ``lost``, costed at their estimate, so giving up never leaves money unaccounted; the error then
    propagates."""
    give_up_at = monotonic() + (lease_seconds() if give_up_after_s is None else give_up_after_s)
    attempt = 0
    while True:
        attempt += 1
        try:
            record()
            return
        except OperationalError as exc:
            delay = min(0.2 * attempt, RECORD_RETRY_MAX_DELAY_S)
            if monotonic() + delay >= give_up_at:
                raise
            log.warning("recording a provider answer failed (%s %s); retry %d in %.1f s", exc.__class__.__name__, exc,
                        attempt, delay)
            if not connection.in_atomic_block and not connection.is_usable():
                connection.close()  # a broken PostgreSQL connection: the next attempt reconnects
            sleep(delay)


def breaker_sample(*, ok: bool, now: dt.datetime, kind: str) -> None:
    """Best effort: a missed breaker sample must never cost a recorded answer."""
    try:
        guards.breaker_record(ok=ok, now=now, kind=kind)
    except OperationalError:
        log.warning("could not record a circuit-breaker sample (%s); the window misses one", kind)


def keep_only(reserved: Reserved, sent_ids: set[int]) -> bool:
    """Drop calls the reaper took back while this batch waited for a slot (their items were
    requeued and may be served by another worker); False when nothing is left to send."""
    if len(sent_ids) == len(reserved.calls):
        return True
    log.warning("batch %s: %d reservations expired while waiting for a slot; not sent",
                reserved.batch_id, len(reserved.calls) - len(sent_ids))
    keep = [n for n, c in enumerate(reserved.calls) if c.pk in sent_ids]
    reserved.calls = [reserved.calls[n] for n in keep]
    reserved.requests = [reserved.requests[n] for n in keep]
    reserved.served = {c.pk: reserved.served[c.pk] for c in reserved.calls}
    return bool(reserved.calls)
