"""Step 6, the record: a provider answer (``completed``, costed by the bill rule, cache written, items
served), an unreadable one, an error (by its row in ``outcomes.RULES``), or a batch given back
unsent (``withhold``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import transaction

from skiptrace import guards
from skiptrace.bulk import atomic_commit, insert_rows, together, update_rows
from skiptrace.models import OPEN_CALL_STATES, CacheEntry, CallState, ProviderCall, RunItem
from skiptrace.money import outcomes
from skiptrace.money.cache import L1, Answer, cache_key
from skiptrace.money.items import BatchOutcome, conclude, requeue, serve_stale_or_fail, serve_stale_or_wait
from skiptrace.money.reserve import Reserved
from skiptrace.money.trail import id_ranges, log_call, log_calls
from skiptrace.provider import PROVIDER, ProviderError, TraceResult
from skiptrace.states import WaitReason

log = logging.getLogger("convexa.service")


def withhold(reserved: Reserved, withheld: guards.NotSent, *, now: dt.datetime, outcome: BatchOutcome) -> None:
    """A batch given back before its POST: its calls end ``errored`` at cost 0 (they never left) and
    its items go back to the queue, to wait for the breaker or to be claimed afresh."""
    items = [i for c in reserved.calls for i in reserved.served[c.pk]]
    why = ("the circuit breaker opened while it waited" if withheld.reason == "circuit_open"
           else "its waits ran past the lease")
    log.warning("batch %s not sent: %s; calls=%d provider_call_ids=%s", reserved.batch_id, why,
                len(reserved.calls), id_ranges([c.pk for c in reserved.calls]))
    with transaction.atomic():
        ProviderCall.objects.filter(batch_id=reserved.batch_id, state__in=OPEN_CALL_STATES).update(
            state=CallState.ERRORED, cost_cents=0, error_text=f"not sent: {why}", finished_at=now, lease_until=None,
            sent_at=None,
        )
        if withheld.reason == "circuit_open":
            serve_stale_or_wait(items, now=now, delay_s=withheld.retry_after, reason=WaitReason.CIRCUIT_OPEN,
                                 outcome=outcome)
            outcome.circuit_open = True
        else:
            requeue(items, now=now, delay_s=None, reason=None)
            outcome.waiting += len(items)


def record_answer(
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
    entries, answers = complete_calls(reserved.calls, results, match_count, provider_request_id,
                                      answered_at=now, now=now)
    served: list[tuple[RunItem, Answer]] = []
    for call, answer in zip(reserved.calls, answers, strict=True):
        call.status_code, call.finished_at, call.lease_until = status_code, now, None
        served.extend((item, answer) for item in reserved.served[call.pk])
    # PostgreSQL: the calls, the cache, the items and the leads' contacts in one statement
    # (``bulk.together``), sent with BEGIN and COMMIT: one round trip. Nothing in here reads what it writes.
    with atomic_commit(lazy=True), together(until_commit=True):
        update_rows(ProviderCall, reserved.calls, [
            "state", "status_code", "response_json", "payload_hash", "cost_cents", "matched", "match_count",
            "parsed_contacts_json", "provider_request_id", "finished_at", "lease_until", "bill_mismatch",
        ])
        insert_rows(
            CacheEntry, entries, conflict=["provider", "idempotency_key"],
            update_fields=["signature", "payload_hash", "response_json", "parsed_contacts_json", "ttl_expires_at",
                           "created_at", "last_seen", "provider_call"],
        )
        conclude(served, cached=False, now=now)
    for call, entry in zip(reserved.calls, entries, strict=True):
        L1.put(call.signature, Answer(call.pk, json.loads(entry.parsed_contacts_json), entry.payload_hash, now,
                                      entry.ttl_expires_at), now)
        log_call("completed", call.pk, call.run_id, call.lead_id, matched=call.matched, cost_cents=call.cost_cents)
    outcome.provider_items += len(served)
    log.info("batch %s completed: calls=%d matched=%d cost_cents=%d provider_request_id=%s", reserved.batch_id,
             len(reserved.calls), sum(1 for c in reserved.calls if c.matched),
             sum(c.cost_cents for c in reserved.calls), provider_request_id)


def complete_calls(calls: Sequence[ProviderCall], results: Sequence[TraceResult], match_count: int,
                   provider_request_id: str | None, *, answered_at: dt.datetime, now: dt.datetime,
                   ) -> tuple[list[CacheEntry], list[Answer]]:
    """Mark each call ``completed`` with its answer and its share of the bill (in memory; the
    caller saves them), and build the cache entry and the ``Answer`` each call's items are served
    from. Shared by a fresh answer and by ``skiptrace.reparse`` (a stored answer read again)."""
    expires = answered_at + dt.timedelta(days=settings.CACHE_TTL_DAYS)
    entries: list[CacheEntry] = []
    answers: list[Answer] = []
    costs = bill_spread(calls, [r.matched for r in results], match_count)
    for call, result, (cost, extra) in zip(calls, results, costs, strict=True):
        contacts = result.to_contacts()
        raw = json.dumps(result.raw, sort_keys=True)
        contacts_json = json.dumps(contacts, sort_keys=True)
        call.state, call.response_json, call.payload_hash = CallState.COMPLETED, raw, result.payload_hash
        call.cost_cents, call.bill_mismatch, call.matched = cost, extra, result.matched
        call.match_count, call.parsed_contacts_json, call.provider_request_id = match_count, contacts_json, provider_request_id
        entries.append(CacheEntry(
            provider=PROVIDER, idempotency_key=cache_key(call.signature), signature=call.signature,
            payload_hash=result.payload_hash, response_json=raw, parsed_contacts_json=contacts_json,
            ttl_expires_at=expires, created_at=answered_at, last_seen=now, provider_call_id=call.pk,
        ))
        answers.append(Answer(call.pk, contacts, result.payload_hash, answered_at, expires, stale=expires <= now))
    return entries, answers


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


def record_unreadable(reserved: Reserved, exc: ProviderError, *, now: dt.datetime, outcome: BatchOutcome) -> None:
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
                reserved.batch_id, exc.detail, exc.status_code, len(calls), id_ranges([c.pk for c in calls]),
                exc.match_count, sum(c for c, _ in costs))
    for n, (call, (cost, extra)) in enumerate(zip(calls, costs, strict=True)):
        call.state, call.cost_cents, call.bill_mismatch, call.status_code = CallState.UNREADABLE, cost, extra, exc.status_code
        call.error_text = detail if n == 0 else f"{detail} (answer stored on provider call {calls[0].pk})"
        call.response_json = exc.body if n == 0 else None
        call.match_count, call.finished_at, call.lease_until = exc.match_count, now, None
    with transaction.atomic():
        log_calls("unreadable", calls)
        update_rows(ProviderCall, calls, ["state", "cost_cents", "bill_mismatch", "status_code", "error_text",
                                          "response_json", "match_count", "finished_at", "lease_until"])
        serve_stale_or_fail(items, now=now, error=f"{detail}; resume the run to send it again, or run "
                             "manage.py skiptrace_reparse after a parser fix", outcome=outcome)


def record_error(reserved: Reserved, exc: ProviderError, *, now: dt.datetime, outcome: BatchOutcome) -> None:
    """Settle calls and items after a provider error, by its row in ``outcomes.RULES`` (see the
    reaper for answers that never came)."""
    rule = outcomes.rule_for(exc)
    if rule.items is None:
        record_unreadable(reserved, exc, now=now, outcome=outcome)
        return
    call_ids = [c.pk for c in reserved.calls]
    items = [i for c in reserved.calls for i in reserved.served[c.pk]]
    detail = f"{exc.kind}: {exc.detail}"[:500]
    log.warning("batch %s failed: %s (status %s) calls=%d provider_call_ids=%s runs=%s", reserved.batch_id, exc.kind,
                exc.status_code, len(call_ids), id_ranges(call_ids), ",".join(sorted({i.run_id for i in items})))
    lost = rule.call_state == CallState.LOST
    with transaction.atomic():
        log_calls("lost" if lost else "failed", reserved.calls, kind=exc.kind)
        if lost:
            # The request may have been billed and we will never know the answer: costed at its
            # estimate, never re-sent by itself (invariant 1).
            log.warning("batch %s lost: provider_call_ids=%s lead_ids=%s", reserved.batch_id, id_ranges(call_ids),
                        ",".join(c.lead_id for c in reserved.calls[:20]) + ("..." if len(call_ids) > 20 else ""))
        ProviderCall.objects.filter(id__in=call_ids).update(
            state=rule.call_state, cost_cents=rule.cost_value(), error_text=detail, status_code=exc.status_code,
            finished_at=now, lease_until=None,
        )
        rule.items(items, exc, detail, now, outcome, rule)
