"""The money path: one batch of run items from the queue to the provider and back.

Every caller goes through here: the worker (``batch_process``), the single-lead API
(``lead_skiptrace``) and the CLI. What it guarantees (the money and audit invariants):

1. A ``provider_calls`` row is committed (state ``reserved``) for every lead of a request before the
   request is sent; after any crash, requests that reached the provider <= rows. A call whose answer
   never came back becomes ``lost``, is costed at its estimate and is never re-sent by itself; so
   does a 2xx answer we cannot read (``unreadable``, costed at least at the provider's matchCount).
2. One normalized input (its signature) is sent at most once per TTL unless ``force``: the L1/L2
   caches answer repeats, items of one signature in one batch share one call, and the unique
   ``(provider, idempotency_key)`` index makes a second concurrent reservation collide, so the
   second worker waits for the first call's answer instead of paying for it again.
   ``idempotency_key = sha256(signature)`` for a signature's first call (the spec's key) and
   ``sha256(signature:generation)`` for each deliberate later one (TTL expiry, force, retry after
   an error, resume of a lost call), where generation counts the signature's calls that reached a
   final state. A call still open is not final, so two workers compute the same key and collide.
3. Today's spend plus the worst case of what is in flight never passes the cap: the batch is cut
   to what the remaining budget can pay if every record matches, in the same transaction that
   reserves the calls (``guards.budget_*``).
4. Every item ends ``done`` or ``failed`` with a reason; ``item.provider_call`` names the call whose
   answer it carries (its own, or a cached one), so run -> lead -> provider call is traceable.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from contacts import services as contact_services
from skiptrace import guards
from skiptrace.bulk import insert_rows, update_rows
from skiptrace.models import (
    OPEN_CALL_STATES,
    UNKNOWN_OUTCOME_STATES,
    AttemptReason,
    CacheEntry,
    CallState,
    ItemStatus,
    ProviderCall,
    Run,
    RunItem,
)
from skiptrace.normalize import idempotency_key
from skiptrace.provider import PROVIDER, BatchDataClient, ProviderError, TraceRequest, TraceResult

log = logging.getLogger("convexa.service")

Clock = Callable[[], dt.datetime]
PREDECESSOR_LABEL = "sanitized_retry_predecessor"
# Why a run's items wait for the provider; cleared as soon as a batch of the run gets past them.
PROVIDER_WAIT_REASONS = ("circuit_open", "provider_not_configured", "provider_auth", "provider_out_of_credits")
WAIT_FOR_OTHER_CALL_S = 1.0


@dataclass(frozen=True)
class Policy:
    force: bool = False
    fallback: bool = False
    retry_sanitized: bool = True

    @classmethod
    def default(cls) -> Policy:
        return cls(retry_sanitized=settings.SANITIZED_RETRY_ENABLED)


def cache_key(signature: str) -> str:
    """The L2 key of a signature: the idempotency key of its first call (the spec's key)."""
    return idempotency_key(signature, 0)


def lease_seconds() -> float:
    """How long a claim or a reservation may stay open before the reaper takes it back."""
    return 2 * settings.PROVIDER_TIMEOUT_S + 60


# --- L1: in-process cache ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What serves an item: a call's parsed contacts."""

    call_id: int | None
    contacts: dict
    payload_hash: str
    created_at: dt.datetime
    expires_at: dt.datetime
    stale: bool = False

    @property
    def has_contacts(self) -> bool:
        return bool(self.contacts.get("phones") or self.contacts.get("emails"))


class L1Cache:
    """A process-local dict with expiry (10 minutes, never beyond the L2 entry). It only saves a query."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._data: dict[str, tuple[dt.datetime, Answer]] = {}
        self._lock = threading.Lock()

    def get(self, signature: str, now: dt.datetime) -> Answer | None:
        with self._lock:
            hit = self._data.get(signature)
            if hit is None:
                return None
            until, answer = hit
            if now >= until or now >= answer.expires_at:
                del self._data[signature]
                return None
            return answer

    def put(self, signature: str, answer: Answer, now: dt.datetime) -> None:
        until = min(now + dt.timedelta(seconds=self.ttl_s), answer.expires_at)
        with self._lock:
            if len(self._data) > 200_000:  # bound memory on a huge run; L2 still answers
                self._data.clear()
            self._data[signature] = (until, answer)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


L1 = L1Cache(ttl_s=settings.L1_CACHE_TTL_S)


def _answer_from_entry(entry: CacheEntry, now: dt.datetime) -> Answer:
    return Answer(
        call_id=entry.provider_call_id,
        contacts=json.loads(entry.parsed_contacts_json),
        payload_hash=entry.payload_hash,
        created_at=entry.created_at,
        expires_at=entry.ttl_expires_at,
        stale=entry.ttl_expires_at <= now,
    )


def cache_lookup(signatures: Iterable[str], now: dt.datetime, *, include_expired: bool = False) -> dict[str, Answer]:
    """L1 then L2 (one ``IN`` query) for many signatures; expired entries only when asked."""
    found: dict[str, Answer] = {}
    missing: list[str] = []
    for sig in set(signatures):
        answer = L1.get(sig, now)
        if answer is not None:
            found[sig] = answer
        else:
            missing.append(sig)
    if missing:
        keys = {cache_key(sig): sig for sig in missing}
        entries = CacheEntry.objects.filter(provider=PROVIDER, idempotency_key__in=list(keys))
        for entry in entries:
            answer = _answer_from_entry(entry, now)
            if not answer.stale:
                L1.put(entry.signature, answer, now)
                found[entry.signature] = answer
            elif include_expired:
                found[entry.signature] = answer
    return found


# --- claiming ------------------------------------------------------------------------------------


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
    eligible = eligible.filter(run__paused_by_operator=False, run__finished_at__isnull=True).filter(
        Q(run__soft_paused=False) | Q(run__override_budget=True)
    )
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
            status=ItemStatus.IN_FLIGHT, lease_until=lease, updated_at=now
        )
        items = list(RunItem.objects.filter(id__in=ids, status=ItemStatus.IN_FLIGHT, lease_until=lease).select_related("run"))
        run_ids = {item.run_id for item in items}
        Run.objects.filter(run_id__in=run_ids, started_at__isnull=True).update(started_at=now)
    return items


# --- one batch -----------------------------------------------------------------------------------


@dataclass
class Reserved:
    """Calls reserved for one provider HTTP request, and the items each call serves."""

    batch_id: str
    calls: list[ProviderCall] = field(default_factory=list)
    requests: list[TraceRequest] = field(default_factory=list)
    served: dict[int, list[RunItem]] = field(default_factory=dict)  # call id -> items
    probe: bool = False  # the circuit breaker's half-open probe: sent even though the breaker is open
    reserved_at: float = field(default_factory=time.monotonic)  # the waits before the POST end by its lease


@dataclass
class BatchOutcome:
    claimed: int = 0
    cached: int = 0
    provider_items: int = 0
    waiting: int = 0
    failed: int = 0
    budget_paused: bool = False
    circuit_open: bool = False
    run_ids: set[str] = field(default_factory=set)


def _policy_of(run: Run) -> Policy:
    return Policy(force=run.policy_force, fallback=run.policy_fallback, retry_sanitized=run.policy_retry_sanitized)


def _usable(answer: Answer, item: RunItem) -> bool:
    """A cached answer serves an item unless the run forces a re-fetch of answers older than itself."""
    if item.run.policy_force and item.attempt_reason == AttemptReason.PRIMARY:
        return answer.created_at >= item.run.created_at
    return True


def batch_process(
    items: Sequence[RunItem], *, client: BatchDataClient, clock: Clock = timezone.now, worker_id: str = "local"
) -> BatchOutcome:
    """Serve claimed items: from cache, by one provider request, or put them back to wait.

    Returns what happened. Never raises for a provider problem: those end in item states.
    """
    outcome = BatchOutcome(claimed=len(items), run_ids={i.run_id for i in items})
    if not items:
        return outcome
    reserved = batch_reserve(items, client=client, now=clock(), outcome=outcome)
    if reserved is not None and reserved.calls:
        batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id=worker_id)
    runs_refresh(outcome.run_ids, now=clock())
    return outcome


def batch_reserve(
    items: Sequence[RunItem], *, client: BatchDataClient, now: dt.datetime, outcome: BatchOutcome
) -> Reserved | None:
    """Cache, single flight, budget and call rows, in one transaction."""
    with transaction.atomic():
        pending = _serve_from_cache(items, now=now, outcome=outcome)
        if not pending:
            return None
        if not client.configured:
            _requeue(pending, now=now, delay_s=30, reason="provider_not_configured")
            outcome.waiting += len(pending)
            return None
        breaker = guards.breaker_check(now)
        if not breaker.allowed:
            _serve_stale_or_wait(pending, now=now, delay_s=breaker.retry_after, reason="circuit_open", outcome=outcome)
            outcome.circuit_open = True
            return None
        Run.objects.filter(run_id__in={i.run_id for i in pending}, reason__in=PROVIDER_WAIT_REASONS).update(reason=None)
        by_sig: dict[str, list[RunItem]] = defaultdict(list)
        for item in pending:
            by_sig[item.active_signature].append(item)
        calls_by_sig = _calls_by_signature(list(by_sig), now=now)
        # On PostgreSQL (READ COMMITTED) another worker may have completed a call for one of these
        # signatures between the cache lookup above and that query: the call reads as final, not
        # open, and the signature would be paid for a second time. Its cache entry was committed
        # with it, so a second look at the cache now finds it.
        settled = [i for sig, state in calls_by_sig.items() if state.final_count and not state.open for i in by_sig[sig]]
        if settled:
            unserved = {id(i) for i in _serve_from_cache(settled, now=now, outcome=outcome)}
            for sig in {i.active_signature for i in settled}:
                by_sig[sig] = [i for i in by_sig[sig] if id(i) in unserved]
                if not by_sig[sig]:
                    del by_sig[sig]
        to_call: list[str] = []
        for sig, sig_items in by_sig.items():
            state = calls_by_sig.get(sig)
            if state and state.open:
                _requeue(sig_items, now=now, delay_s=WAIT_FOR_OTHER_CALL_S, reason=None)
                outcome.waiting += len(sig_items)
            elif state and state.lost_recently and not any(i.resend_allowed or i.run.policy_force for i in sig_items):
                got = ("an answer that could not be read" if state.lost_state == CallState.UNREADABLE
                       else "no answer")
                _fail(sig_items, now=now, error=f"provider_outcome_unknown: an earlier request for this lead got {got}; "
                      "resume the run to send it again", call_id=state.lost_call_id)
                outcome.failed += len(sig_items)
            else:
                to_call.append(sig)
        if not to_call:
            return None
        # Budget: cut the batch to what the remaining budget pays at worst case (every record matched).
        override = [s for s in to_call if all(i.run.override_budget for i in by_sig[s])]
        capped = [s for s in to_call if s not in set(override)]
        fits = guards.budget_fit(len(capped), now=now)
        over = capped[fits:]
        if over:
            over_items = [i for s in over for i in by_sig[s]]
            _requeue(over_items, now=now, delay_s=None, reason="daily_budget")
            Run.objects.filter(run_id__in={i.run_id for i in over_items}, override_budget=False).update(
                soft_paused=True, reason="daily_budget"
            )
            outcome.waiting += len(over_items)
            outcome.budget_paused = True
            log.warning("daily budget reached: %d leads wait for budget runs=%s", len(over_items),
                        ",".join(sorted({i.run_id for i in over_items})))
        chosen = override + capped[:fits]
        if not chosen:
            return None
        reserved = _reserve_calls(chosen, by_sig, calls_by_sig, now=now, outcome=outcome, api=client.api_version)
        reserved.probe = breaker.probe
        return reserved


@dataclass
class _SigCalls:
    open: bool = False
    final_count: int = 0
    lost_recently: bool = False  # lost or unreadable within the TTL, and no answer since
    lost_call_id: int | None = None
    lost_state: str = ""


def _calls_by_signature(signatures: list[str], *, now: dt.datetime) -> dict[str, _SigCalls]:
    ttl_start = now - dt.timedelta(days=settings.CACHE_TTL_DAYS)
    result: dict[str, _SigCalls] = {}
    rows = (
        ProviderCall.objects.filter(provider=PROVIDER, signature__in=signatures)
        .values("signature", "state", "id", "created_at")
        .order_by("id")
    )
    for row in rows:
        state = result.setdefault(row["signature"], _SigCalls())
        if row["state"] in OPEN_CALL_STATES:
            state.open = True
        else:
            state.final_count += 1
        if row["state"] in UNKNOWN_OUTCOME_STATES and row["created_at"] >= ttl_start:
            state.lost_recently, state.lost_call_id, state.lost_state = True, row["id"], row["state"]
        elif row["state"] == CallState.COMPLETED:
            state.lost_recently = False  # a later answer settles it
    return result


def _reserve_calls(
    chosen: list[str],
    by_sig: dict[str, list[RunItem]],
    calls_by_sig: dict[str, _SigCalls],
    *,
    now: dt.datetime,
    outcome: BatchOutcome,
    api: str = "v1",
) -> Reserved:
    batch_id = uuid.uuid4().hex
    day = guards.budget_day(now)
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    lease = now + dt.timedelta(seconds=lease_seconds())
    rows: list[ProviderCall] = []
    for sig in chosen:
        first = by_sig[sig][0]
        generation = calls_by_sig[sig].final_count if sig in calls_by_sig else 0
        request = _trace_request(first, request_id=first.lead_id)
        rows.append(
            ProviderCall(
                provider=PROVIDER,
                idempotency_key=idempotency_key(sig, generation),
                lead_id=first.lead_id,
                run_id=first.run_id,
                request_json=json.dumps(_request_audit(request), sort_keys=True),
                signature=sig,
                generation=generation,
                batch_id=batch_id,
                item_id=first.id,
                estimate_cents=price,
                budget_day=day,
                attempt_reason=first.attempt_reason,
                predecessor_id=first.predecessor_call_id if first.attempt_reason == AttemptReason.ADDRESS_SANITIZED else None,
                state=CallState.RESERVED,
                lease_until=lease,
                created_at=now,
                api_version=api,
            )
        )
    # ON CONFLICT DO NOTHING: a key taken by another worker since we looked means that worker's call
    # is in flight for this signature; our items wait for its answer (single flight).
    insert_rows(ProviderCall, rows, conflict=["provider", "idempotency_key"])
    mine = {c.signature: c for c in ProviderCall.objects.filter(batch_id=batch_id)}
    reserved = Reserved(batch_id=batch_id)
    for sig in chosen:
        sig_items = by_sig[sig]
        call = mine.get(sig)
        if call is None:
            _requeue(sig_items, now=now, delay_s=WAIT_FOR_OTHER_CALL_S, reason=None)
            outcome.waiting += len(sig_items)
            continue
        reserved.calls.append(call)
        reserved.requests.append(_trace_request(sig_items[0], request_id=str(call.pk)))
        reserved.served[call.pk] = sig_items
        for item in sig_items:
            item.provider_call, item.lease_until, item.updated_at = call, lease, now
    update_rows(RunItem, [i for c in reserved.calls for i in reserved.served[c.pk]],
                ["provider_call", "lease_until", "updated_at"])
    if reserved.calls:
        log.info("batch %s reserved: runs=%s calls=%d provider_call_ids=%d..%d", batch_id,
                 ",".join(sorted({c.run_id or "-" for c in reserved.calls})), len(reserved.calls),
                 reserved.calls[0].pk, reserved.calls[-1].pk)
        for call in reserved.calls:
            log.debug("reserved provider_call_id=%s run_id=%s lead_id=%s generation=%s attempt_reason=%s",
                      call.pk, call.run_id, call.lead_id, call.generation, call.attempt_reason)
    return reserved


def _trace_request(item: RunItem, *, request_id: str) -> TraceRequest:
    sanitized = item.attempt_reason == AttemptReason.ADDRESS_SANITIZED
    return TraceRequest(
        request_id=request_id,
        street=item.street_sanitized if sanitized else item.street,
        city=item.city,
        state=item.state,
        zip=item.zip,
        first=item.first,
        last=item.last,
    )


def _request_audit(request: TraceRequest) -> dict:
    """The sanitized request kept on the call row: what was asked, never a credential."""
    body = {"propertyAddress": {k: v for k, v in (("street", request.street), ("city", request.city),
                                                   ("state", request.state), ("zip", request.zip)) if v}}
    if request.first or request.last:
        body["name"] = {"first": request.first, "last": request.last}
    return body


def batch_send(
    reserved: Reserved, *, client: BatchDataClient, clock: Clock, outcome: BatchOutcome, worker_id: str
) -> None:
    """Steps 7-10: permits, mark sent (committed), a last look at the breaker, one HTTP request,
    record the outcome."""
    try:
        client.build_body(reserved.requests)  # a request the provider would refuse never leaves
    except ValueError as exc:
        _record_failure(reserved, ProviderError("http_4xx", f"invalid request: {exc}", maybe_sent=False),
                        now=clock(), outcome=outcome)
        return
    deadline = guards.send_deadline(reserved.reserved_at)

    def before_send() -> None:
        # After the slot and permit waits, immediately before the POST: a breaker that opened while
        # this batch waited keeps it home, and so does a lease that could be reaped before the answer.
        guards.last_look(now=clock(), deadline=deadline, probe=reserved.probe)
        guards.rate_permit_fresh()

    try:
        with guards.send_permit(reserved.batch_id, clock=clock, lease_s=lease_seconds(), deadline=deadline) as sent_ids:
            if not _keep_only(reserved, sent_ids):
                return
            log.info("batch %s sent: provider_call_ids=%s runs=%s", reserved.batch_id,
                     _id_ranges([c.pk for c in reserved.calls]), ",".join(sorted({c.run_id or "-" for c in reserved.calls})))
            _log_calls("sent", reserved.calls)
            try:
                try:
                    result = client.skip_trace(reserved.requests, before_send=before_send)
                except (ProviderError, guards.NotSent):
                    raise
                except Exception as exc:  # a bug after sending: the answer is unknown, so it is "lost"
                    log.exception("unexpected error in provider request %s", reserved.batch_id)
                    raise ProviderError("connection", f"unexpected {exc.__class__.__name__}", maybe_sent=True) from exc
            except ProviderError as exc:
                _retrying(lambda err=exc: _record_failure(reserved, err, now=clock(), outcome=outcome))
                _breaker_record(ok=False, now=clock(), kind=exc.kind)
                return
    except guards.NotSent as withheld:
        _retrying(lambda w=withheld: _withhold(reserved, w, now=clock(), outcome=outcome))
        return
    # The provider has answered (and billed): recording that answer must survive a busy database.
    _retrying(lambda: _record_success(reserved, result.results, result.status_code, result.match_count,
                                      result.provider_request_id, now=clock(), outcome=outcome))
    _breaker_record(ok=True, now=clock(), kind="ok")


def _withhold(reserved: Reserved, withheld: guards.NotSent, *, now: dt.datetime, outcome: BatchOutcome) -> None:
    """A batch given back before its POST: its calls end ``errored`` at cost 0 (they never left) and
    its items go back to the queue, to wait for the breaker or to be claimed afresh."""
    items = [i for c in reserved.calls for i in reserved.served[c.pk]]
    why = ("the circuit breaker opened while it waited" if withheld.reason == "circuit_open"
           else "its waits ran past the lease")
    log.warning("batch %s not sent: %s; calls=%d provider_call_ids=%s", reserved.batch_id, why,
                len(reserved.calls), _id_ranges([c.pk for c in reserved.calls]))
    with transaction.atomic():
        ProviderCall.objects.filter(batch_id=reserved.batch_id, state__in=OPEN_CALL_STATES).update(
            state=CallState.ERRORED, cost_cents=0, error_text=f"not sent: {why}", finished_at=now, lease_until=None,
            sent_at=None,
        )
        if withheld.reason == "circuit_open":
            _serve_stale_or_wait(items, now=now, delay_s=withheld.retry_after, reason="circuit_open", outcome=outcome)
            outcome.circuit_open = True
        else:
            _requeue(items, now=now, delay_s=None, reason=None)
            outcome.waiting += len(items)


RECORD_RETRY_MAX_DELAY_S = 2.0


def _retrying(
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
            log.warning("recording a provider answer failed (%s); retry %d in %.1f s", exc.__class__.__name__,
                        attempt, delay)
            if not connection.in_atomic_block and not connection.is_usable():
                connection.close()  # a broken PostgreSQL connection: the next attempt reconnects
            sleep(delay)


def _breaker_record(*, ok: bool, now: dt.datetime, kind: str) -> None:
    """Best effort: a missed breaker sample must never cost a recorded answer."""
    try:
        guards.breaker_record(ok=ok, now=now, kind=kind)
    except OperationalError:
        log.warning("could not record a circuit-breaker sample (%s); the window misses one", kind)


def _log_calls(event: str, calls: Sequence[ProviderCall], **extra: object) -> None:
    """One DEBUG line per call for a money-path event, with every id needed to trace it."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    tail = "".join(f" {k}={v}" for k, v in extra.items())
    for call in calls:
        log.debug("%s provider_call_id=%s run_id=%s lead_id=%s%s", event, call.pk, call.run_id, call.lead_id, tail)


def _keep_only(reserved: Reserved, sent_ids: set[int]) -> bool:
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


def _record_success(
    reserved: Reserved,
    results: list[TraceResult],
    status_code: int,
    match_count: int,
    provider_request_id: str | None,
    *,
    now: dt.datetime,
    outcome: BatchOutcome,
) -> None:
    """One transaction, a handful of bulk statements for the whole batch (not per lead)."""
    expires = now + dt.timedelta(days=settings.CACHE_TTL_DAYS)
    entries: list[CacheEntry] = []
    served: list[tuple[RunItem, Answer]] = []
    costs = bill_spread(reserved.calls, [r.matched for r in results], match_count)
    for call, result, (cost, extra) in zip(reserved.calls, results, costs, strict=True):
        contacts = result.to_contacts()
        raw = json.dumps(result.raw, sort_keys=True)
        contacts_json = json.dumps(contacts, sort_keys=True)
        call.state, call.status_code, call.response_json = CallState.COMPLETED, status_code, raw
        call.payload_hash, call.cost_cents, call.matched = result.payload_hash, cost, result.matched
        call.bill_mismatch = extra
        call.match_count, call.parsed_contacts_json, call.provider_request_id = match_count, contacts_json, provider_request_id
        call.finished_at, call.lease_until = now, None
        entries.append(CacheEntry(
            provider=PROVIDER, idempotency_key=cache_key(call.signature), signature=call.signature,
            payload_hash=result.payload_hash, response_json=raw, parsed_contacts_json=contacts_json,
            ttl_expires_at=expires, created_at=now, last_seen=now, provider_call_id=call.pk,
        ))
        answer = Answer(call.pk, contacts, result.payload_hash, now, expires)
        served.extend((item, answer) for item in reserved.served[call.pk])
    with transaction.atomic():
        update_rows(ProviderCall, reserved.calls, [
            "state", "status_code", "response_json", "payload_hash", "cost_cents", "matched", "match_count",
            "parsed_contacts_json", "provider_request_id", "finished_at", "lease_until", "bill_mismatch",
        ])
        insert_rows(
            CacheEntry, entries, conflict=["provider", "idempotency_key"],
            update_fields=["signature", "payload_hash", "response_json", "parsed_contacts_json", "ttl_expires_at",
                           "created_at", "last_seen", "provider_call"],
        )
        _conclude(served, cached=False, now=now)
    for call, entry in zip(reserved.calls, entries, strict=True):
        L1.put(call.signature, Answer(call.pk, json.loads(entry.parsed_contacts_json), entry.payload_hash, now, expires), now)
        log.debug("completed provider_call_id=%s run_id=%s lead_id=%s matched=%s cost_cents=%s",
                  call.pk, call.run_id, call.lead_id, call.matched, call.cost_cents)
    outcome.provider_items += len(served)
    log.info("batch %s completed: calls=%d matched=%d cost_cents=%d provider_request_id=%s", reserved.batch_id,
             len(reserved.calls), sum(1 for c in reserved.calls if c.matched),
             sum(c.cost_cents for c in reserved.calls), provider_request_id)


def bill_spread(calls: Sequence[ProviderCall], matched: Sequence[bool], match_count: int | None,
                *, floor_cents: Sequence[int] | None = None) -> list[tuple[int, bool]]:
    """Each call's share of one provider request's bill: ``[(cost_cents, carries_extra)]``.

    The bill is max(per-person matches, the provider's ``matchCount``) x price, so that
    ``SUM(cost_cents)`` is what the provider charges. A matched call costs the price; what
    ``matchCount`` bills above that goes to the unmatched calls, a price each (flagged
    ``bill_mismatch``), any rest to the last call. ``floor_cents`` (unreadable answers: each call's
    estimate) is what each call costs at least.
    """
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    costs = [price if m else 0 for m in matched]
    if floor_cents is not None:
        costs = [max(c, f) for c, f in zip(costs, floor_cents, strict=True)]
    flags = [False] * len(costs)
    extra = max(0, (match_count or 0) * price - sum(costs))
    for n, m in enumerate(matched):
        if extra <= 0:
            break
        if not m and costs[n] == 0:
            share = min(price, extra)
            costs[n], flags[n], extra = share, True, extra - share
    if extra > 0 and costs:
        costs[-1], flags[-1] = costs[-1] + extra, True
    if any(flags):
        log.warning("provider bill above the per-person matches: matchCount=%s matched=%d calls=%d",
                    match_count, sum(1 for m in matched if m), len(calls))
    return list(zip(costs, flags, strict=True))


def _record_unreadable(reserved: Reserved, exc: ProviderError, *, now: dt.datetime, outcome: BatchOutcome) -> None:
    """A 2xx we could not read: the provider did the work and bills it, the answer is unknown.

    Settled like a lost call: each call costs at least its estimate, and the batch at least the
    provider's ``matchCount`` x price when that number was readable; the items fail with
    ``provider_unreadable`` and are never re-sent without a resume or ``force``. The body is kept on
    the batch's first call so that ``manage.py skiptrace_reparse`` can serve them later for free.
    """
    calls = reserved.calls
    items = [i for c in calls for i in reserved.served[c.pk]]
    detail = f"provider_unreadable: {exc.detail}"[:500]
    costs = bill_spread(calls, [False] * len(calls), exc.match_count, floor_cents=[c.estimate_cents for c in calls])
    log.warning("batch %s unreadable: %s (status %s) calls=%d provider_call_ids=%s matchCount=%s cost_cents=%d",
                reserved.batch_id, exc.detail, exc.status_code, len(calls), _id_ranges([c.pk for c in calls]),
                exc.match_count, sum(c for c, _ in costs))
    for n, (call, (cost, extra)) in enumerate(zip(calls, costs, strict=True)):
        call.state, call.cost_cents, call.bill_mismatch, call.status_code = CallState.UNREADABLE, cost, extra, exc.status_code
        call.error_text = detail if n == 0 else f"{detail} (answer stored on provider call {calls[0].pk})"
        call.response_json = exc.body if n == 0 else None
        call.match_count, call.finished_at, call.lease_until = exc.match_count, now, None
    with transaction.atomic():
        _log_calls("unreadable", calls)
        update_rows(ProviderCall, calls, ["state", "cost_cents", "bill_mismatch", "status_code", "error_text",
                                          "response_json", "match_count", "finished_at", "lease_until"])
        _serve_stale_or_fail(items, now=now, error=f"{detail}; resume the run to send it again, or run "
                             "manage.py skiptrace_reparse after a parser fix", outcome=outcome)


def _record_failure(reserved: Reserved, exc: ProviderError, *, now: dt.datetime, outcome: BatchOutcome) -> None:
    """Settle calls and items after a provider error (see the reaper for answers that never came)."""
    if exc.kind == "unreadable":
        _record_unreadable(reserved, exc, now=now, outcome=outcome)
        return
    call_ids = [c.pk for c in reserved.calls]
    items = [i for c in reserved.calls for i in reserved.served[c.pk]]
    detail = f"{exc.kind}: {exc.detail}"[:500]
    log.warning("batch %s failed: %s (status %s) calls=%d provider_call_ids=%s runs=%s", reserved.batch_id, exc.kind,
                exc.status_code, len(call_ids), _id_ranges(call_ids), ",".join(sorted({i.run_id for i in items})))
    with transaction.atomic():
        lost = exc.maybe_sent and exc.kind in ("timeout", "connection")
        _log_calls("lost" if lost else "failed", reserved.calls, kind=exc.kind)
        if lost:
            # The request may have been billed and we will never know the answer: costed at its
            # estimate, never re-sent by itself (invariant 1).
            log.warning("batch %s lost: provider_call_ids=%s lead_ids=%s", reserved.batch_id, _id_ranges(call_ids),
                        ",".join(c.lead_id for c in reserved.calls[:20]) + ("..." if len(call_ids) > 20 else ""))
            ProviderCall.objects.filter(id__in=call_ids).update(
                state=CallState.LOST, cost_cents=F("estimate_cents"), error_text=detail,
                status_code=exc.status_code, finished_at=now, lease_until=None,
            )
            _serve_stale_or_fail(items, now=now, error=f"provider_outcome_unknown: {detail}", outcome=outcome)
            return
        ProviderCall.objects.filter(id__in=call_ids).update(
            state=CallState.ERRORED, cost_cents=0, error_text=detail, status_code=exc.status_code,
            finished_at=now, lease_until=None,
        )
        if exc.kind == "rate_limited":
            delay = exc.retry_after if exc.retry_after is not None else guards.rate_limited_backoff()
            _requeue(items, now=now, delay_s=delay, reason=None)
            outcome.waiting += len(items)
        elif exc.kind in ("auth", "out_of_credits"):
            # Fail closed: the breaker is open (guards.breaker_record), the items wait for an operator.
            _serve_stale_or_wait(items, now=now, delay_s=settings.CIRCUIT_PROBE_INTERVAL_S,
                                 reason=f"provider_{exc.kind}", outcome=outcome)
        elif exc.kind == "http_4xx":
            _fail(items, now=now, error=f"provider_rejected: {detail}")
            outcome.failed += len(items)
        else:  # 5xx, a connection refused before sending: transient, retried with backoff
            retry, give_up = [], []
            for item in items:
                (give_up if item.attempt + 1 >= settings.SKIP_TRACE_MAX_ATTEMPTS else retry).append(item)
            if give_up:
                _serve_stale_or_fail(give_up, now=now, error=f"provider_error: {detail} (after {settings.SKIP_TRACE_MAX_ATTEMPTS} attempts)", outcome=outcome)
            for item in retry:
                RunItem.objects.filter(pk=item.pk).update(
                    status=ItemStatus.QUEUED, attempt=item.attempt + 1, lease_until=None, last_error=detail,
                    not_before=now + dt.timedelta(seconds=guards.backoff_seconds(item.attempt + 1)), updated_at=now,
                )
            outcome.waiting += len(retry)


# --- item outcomes -------------------------------------------------------------------------------


def _serve_from_cache(items: Sequence[RunItem], *, now: dt.datetime, outcome: BatchOutcome) -> list[RunItem]:
    """Serve what the caches can; return the items that still need the provider."""
    answers = cache_lookup([i.active_signature for i in items], now)
    pending: list[RunItem] = []
    served: list[tuple[RunItem, Answer]] = []
    for item in items:
        answer = answers.get(item.active_signature)
        if answer is not None and _usable(answer, item):
            served.append((item, answer))
        else:
            pending.append(item)
    if served:
        outcome.cached += len(served)
        _conclude(served, cached=True, now=now)
        CacheEntry.objects.filter(
            provider=PROVIDER, idempotency_key__in={cache_key(i.active_signature) for i, _ in served}
        ).update(last_seen=now)
    return pending


def _wants_sanitized_retry(item: RunItem, answer: Answer) -> bool:
    """The spec's rule: zero contacts AND a unit marker, on the primary attempt only (at most once)."""
    return (
        not answer.has_contacts
        and item.has_unit
        and item.attempt_reason == AttemptReason.PRIMARY
        and item.run.policy_retry_sanitized
        and bool(item.sanitized_signature)
        and item.sanitized_signature != item.signature
    )


def _conclude(served: Sequence[tuple[RunItem, Answer]], *, cached: bool, now: dt.datetime) -> None:
    """Finish items with their answers, or start their one sanitized retry. Bulk statements only."""
    done: list[tuple[RunItem, Answer]] = []
    retry: list[RunItem] = []
    for item, answer in served:
        if _wants_sanitized_retry(item, answer):
            item.status, item.attempt_reason = ItemStatus.QUEUED, AttemptReason.ADDRESS_SANITIZED
            item.predecessor_call_id = item.provider_call_id = answer.call_id
            item.lease_until = item.not_before = None
            item.updated_at = now
            retry.append(item)
            log.info("address_sanitized retry scheduled run=%s lead=%s predecessor_call=%s",
                     item.run_id, item.lead_id, answer.call_id)
        else:
            item.status, item.cached, item.stale = ItemStatus.DONE, cached, answer.stale
            item.provider_call_id, item.lease_until, item.last_error, item.updated_at = answer.call_id, None, None, now
            done.append((item, answer))
    if retry:
        predecessors = {i.predecessor_call_id for i in retry if i.predecessor_call_id}
        ProviderCall.objects.filter(id__in=predecessors).update(label=PREDECESSOR_LABEL)
        update_rows(RunItem, retry, ["status", "attempt_reason", "predecessor_call", "provider_call",
                                     "lease_until", "not_before", "updated_at"])
    if done:
        update_rows(RunItem, [i for i, _ in done], ["status", "cached", "stale", "provider_call",
                                                    "lease_until", "last_error", "updated_at"])
        contact_services.leads_contacts_save(
            [contact_services.ContactsUpdate(lead_id=i.lead_id, run_id=i.run_id, contacts=a.contacts,
                                             provider_call_id=a.call_id, cached=cached, stale=a.stale)
             for i, a in done],
            now=now,
        )


def conclude_answers(served: Sequence[tuple[RunItem, Answer]], *, now: dt.datetime) -> None:
    """Serve items from answers recorded outside a batch (``skiptrace.reparse``): as fresh answers."""
    _conclude(served, cached=False, now=now)


def _requeue(items: Sequence[RunItem], *, now: dt.datetime, delay_s: float | None, reason: str | None) -> None:
    not_before = now + dt.timedelta(seconds=delay_s) if delay_s else None
    RunItem.objects.filter(id__in=[i.id for i in items]).update(
        status=ItemStatus.QUEUED, lease_until=None, not_before=not_before, updated_at=now
    )
    if reason is not None:
        Run.objects.filter(run_id__in={i.run_id for i in items}).update(reason=reason)


def _fail(items: Sequence[RunItem], *, now: dt.datetime, error: str, call_id: int | None = None) -> None:
    update = dict(status=ItemStatus.FAILED, lease_until=None, last_error=error[:1000], updated_at=now)
    if call_id is not None:
        update["provider_call_id"] = call_id
    RunItem.objects.filter(id__in=[i.id for i in items]).update(**update)


def _serve_stale(items: Sequence[RunItem], *, now: dt.datetime, outcome: BatchOutcome) -> list[RunItem]:
    """Serve items of ``policy.fallback`` runs from an answer even if expired (marked stale);
    return the rest."""
    wanted = [i.active_signature for i in items if i.run.policy_fallback]
    stale = cache_lookup(wanted, now, include_expired=True) if wanted else {}
    served = [(i, stale[i.active_signature]) for i in items if i.run.policy_fallback and i.active_signature in stale]
    if served:
        _conclude(served, cached=True, now=now)
        outcome.cached += len(served)
    return [i for i in items if not (i.run.policy_fallback and i.active_signature in stale)]


def _serve_stale_or_wait(items: Sequence[RunItem], *, now: dt.datetime, delay_s: float, reason: str,
                         outcome: BatchOutcome) -> None:
    """``policy.fallback``: an expired answer, marked stale, beats waiting for the provider."""
    rest = _serve_stale(items, now=now, outcome=outcome)
    if rest:
        _requeue(rest, now=now, delay_s=delay_s, reason=reason)
        outcome.waiting += len(rest)


def _serve_stale_or_fail(items: Sequence[RunItem], *, now: dt.datetime, error: str, outcome: BatchOutcome) -> None:
    rest = _serve_stale(items, now=now, outcome=outcome)
    if rest:
        _fail(rest, now=now, error=error)
        outcome.failed += len(rest)


# --- leases --------------------------------------------------------------------------------------


def leases_reap(*, now: dt.datetime) -> dict[str, int]:
    """Take back what dead workers held. Safe to run from every worker at any time.

    - a call ``sent`` past its lease: its answer is lost -> ``lost``, costed at the estimate; the
      items it served end ``failed`` with ``provider_outcome_unknown`` (never re-sent by themselves);
    - a call ``reserved`` past its lease never left: -> ``errored`` at cost 0;
    - an item ``in_flight`` past its lease with no lost call: back to ``queued``.
    """
    with transaction.atomic():
        sent_calls = list(ProviderCall.objects.filter(state=CallState.SENT, lease_until__lt=now).only(
            "id", "estimate_cents", "run_id", "lead_id"))
        _log_calls("lost", sent_calls, by="reaper")
        sent = [(c.pk, c.estimate_cents) for c in sent_calls]
        for call_id, estimate in sent:
            ProviderCall.objects.filter(pk=call_id, state=CallState.SENT).update(
                state=CallState.LOST, cost_cents=estimate, finished_at=now, lease_until=None,
                error_text="answer lost: the worker stopped or timed out after sending",
            )
        lost_ids = [c for c, _ in sent]
        failed = RunItem.objects.filter(status=ItemStatus.IN_FLIGHT, provider_call_id__in=lost_ids).update(
            status=ItemStatus.FAILED, lease_until=None, updated_at=now,
            last_error="provider_outcome_unknown: the request was sent but its answer was lost; resume to send it again",
        )
        abandoned = ProviderCall.objects.filter(state=CallState.RESERVED, lease_until__lt=now).update(
            state=CallState.ERRORED, cost_cents=0, finished_at=now, lease_until=None,
            error_text="abandoned before sending: the worker stopped",
        )
        expired = list(RunItem.objects.filter(status=ItemStatus.IN_FLIGHT, lease_until__lt=now).values_list("id", "run_id"))
        RunItem.objects.filter(id__in=[i for i, _ in expired], status=ItemStatus.IN_FLIGHT).update(
            status=ItemStatus.QUEUED, lease_until=None, not_before=None, updated_at=now
        )
        run_ids = {r for _, r in expired} | set(
            ProviderCall.objects.filter(id__in=lost_ids).exclude(run_id=None).values_list("run_id", flat=True)
        )
    if sent or abandoned or expired:
        log.warning("reaper: %d calls lost (provider_call_ids=%s), %d items failed, %d reservations released, "
                    "%d items requeued", len(sent), _id_ranges(lost_ids), failed, abandoned, len(expired))
        runs_refresh(run_ids, now=now, force=True)
    return {"lost": len(sent), "failed": failed, "abandoned": abandoned, "requeued": len(expired)}


def _id_ranges(ids: Sequence[int]) -> str:
    """``1..4,9`` for log lines: every id stays findable without a 100-id line."""
    parts: list[tuple[int, int]] = []
    for n in sorted(ids):
        if parts and parts[-1][1] == n - 1:
            parts[-1] = (parts[-1][0], n)
        else:
            parts.append((n, n))
    return ",".join(f"{a}" if a == b else f"{a}..{b}" for a, b in parts)


# --- run counters --------------------------------------------------------------------------------

RunFinished = Callable[[str], None]
_finish_hooks: list[RunFinished] = []


def on_run_finished(hook: RunFinished) -> None:
    """Register what happens once when a run's last item settles (the report writer)."""
    if hook not in _finish_hooks:
        _finish_hooks.append(hook)


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
    row = Run.objects.filter(run_id=run_id).values_list("total", "counted_at", "count_ms").first()
    return row is not None and _recount_due(run_id, *row, now=now)


def _recount_locked(run_id: str, *, now: dt.datetime, force: bool) -> list[str]:
    with transaction.atomic():
        # Serialize recounts of a run: a recount that read before another batch committed must not
        # write its older numbers last (SQLite: the IMMEDIATE write lock; PostgreSQL: the row lock).
        run = Run.objects.filter(run_id=run_id).values_list("total", "counted_at", "count_ms")
        if connection.vendor == "postgresql":
            run = run.select_for_update()
        row = run.first()
        if row is None:
            return []
        if not force and not _recount_due(run_id, *row, now=now):  # another worker recounted while we waited
            return []
        return _recount(run_id, now=now)


def _recount_due(run_id: str, total: int | None, counted_at: dt.datetime | None, count_ms: float, *,
                 now: dt.datetime) -> bool:
    if (total or 0) <= EXACT_RECOUNT_MAX_ITEMS or counted_at is None:
        return True
    spacing_s = max(RECOUNT_MIN_INTERVAL_S, RECOUNT_SPACING * count_ms / 1000)
    if not now - dt.timedelta(seconds=spacing_s) < counted_at <= now:  # due (or the clock went back)
        return True
    # Not due: only a run with nothing left to do needs its final count now.
    return not RunItem.objects.filter(run_id=run_id, status__in=(ItemStatus.QUEUED, ItemStatus.IN_FLIGHT)).exists()


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
    spend = ProviderCall.objects.filter(run_id=run_id).aggregate(s=Sum("cost_cents"))["s"] or 0
    count_ms = 1000 * (time.perf_counter() - started)
    Run.objects.filter(run_id=run_id).update(
        total=sum(c[s] for s in ItemStatus.values), queued=c[ItemStatus.QUEUED], in_flight=c[ItemStatus.IN_FLIGHT],
        done=c[ItemStatus.DONE], failed=c[ItemStatus.FAILED], cache_hits=c["cached"], provider_served=c["fresh"],
        cost_cents=spend, counted_at=now, count_ms=round(count_ms, 2),
    )
    if c[ItemStatus.QUEUED] or c[ItemStatus.IN_FLIGHT]:
        return []
    if not Run.objects.filter(run_id=run_id, finished_at__isnull=True).update(finished_at=now, soft_paused=False, reason=None):
        return []
    Run.objects.filter(run_id=run_id, started_at__isnull=True).update(started_at=now)
    return [run_id]

