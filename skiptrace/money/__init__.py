"""The money path: one batch of run items from the queue to the provider and back.

Read this first. ``batch_process`` below is the whole pipeline, one stage per module:

1. ``claim.items_claim``      queued items whose time has come, with a lease and the worker's id;
2. ``cache``                  L1 then L2: an answer already paid for serves the item for free;
3. ``reserve.batch_reserve``  provider configured? breaker? single flight (one open call per
                              signature), a lost or unreadable answer never re-sent by itself, the
                              budget cut (``guards.budget``), ``provider_calls`` rows ``reserved``,
                              committed;
4. ``send.batch_send``        permits: concurrency slot (calls ``sent``, committed), rate permit, a
                              last look at the breaker and the lease (``guards.permit``); then
5.                            one POST through the provider adapter (``skiptrace.provider``);
6. ``record``                 the answer (``completed``, the bill rule ``record.bill_spread``, cache
                              written, items served), an unreadable answer, an error by its row in
                              ``outcomes.RULES`` (kind -> call state, cost, item action), or a batch
                              given back unsent (``record.withhold``);
7. ``counters.runs_refresh``  counters recounted from the items, the run finished exactly once.

Around it: ``items`` (how items are served, put back, failed), ``reaper`` (leases of dead workers),
``policy`` (``Policy``, the lease), ``trail`` (log lines with every id). Run states and wait reasons:
``skiptrace.states``; admission of new work: ``skiptrace.admission``.

Every caller goes through here: the worker (``batch_process``), the single-lead API
(``runs.lead_skiptrace``) and the CLI. What it guarantees (the money and audit invariants):

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

from collections.abc import Sequence

from django.utils import timezone

from skiptrace.models import RunItem
from skiptrace.money.cache import L1, Answer, L1Cache, cache_key, cache_lookup
from skiptrace.money.claim import items_claim
from skiptrace.money.counters import (
    EXACT_RECOUNT_MAX_ITEMS,
    RECOUNT_MIN_INTERVAL_S,
    RECOUNT_SPACING,
    STALE_COUNTERS_S,
    clear_finish_hooks,
    on_run_finished,
    runs_refresh,
    runs_refresh_stale,
)
from skiptrace.money.items import BatchOutcome, conclude_answers
from skiptrace.money.policy import PREDECESSOR_LABEL, Clock, Policy, lease_seconds
from skiptrace.money.reaper import leases_reap
from skiptrace.money.record import bill_spread, complete_calls
from skiptrace.money.reserve import Reserved, batch_reserve
from skiptrace.money.send import batch_send
from skiptrace.money.sweep import SWEEP_WINDOW, Swept, cached_claim
from skiptrace.provider import BatchDataClient

__all__ = [
    "EXACT_RECOUNT_MAX_ITEMS", "L1", "PREDECESSOR_LABEL", "RECOUNT_MIN_INTERVAL_S", "RECOUNT_SPACING",
    "STALE_COUNTERS_S", "SWEEP_WINDOW", "Answer", "BatchOutcome", "Clock", "L1Cache", "Policy", "Reserved", "batch_process",
    "batch_reserve", "batch_send", "bill_spread", "cache_key", "cached_claim", "Swept", "complete_calls", "cache_lookup", "clear_finish_hooks",
    "conclude_answers", "items_claim", "lease_seconds", "leases_reap", "on_run_finished", "runs_refresh",
    "runs_refresh_stale",
]


def batch_process(
    items: Sequence[RunItem], *, client: BatchDataClient, clock: Clock = timezone.now, worker_id: str = "local",
    provider_batch: int | None = None,
) -> BatchOutcome:
    """Serve claimed items: from cache, by one provider request, or put them back to wait.

    ``provider_batch``: at most this many items go to the provider; the rest of a bigger claim that
    the caches could not serve goes back to the queue (``outcome.put_back``). The worker claims more
    than a provider batch while its claims are (nearly) all cached.

    Returns what happened. Never raises for a provider problem: those end in item states.
    """
    outcome = BatchOutcome(claimed=len(items), run_ids={i.run_id for i in items})
    if not items:
        return outcome
    reserved = batch_reserve(items, client=client, now=clock(), outcome=outcome, worker_id=worker_id,
                             provider_batch=provider_batch)
    if reserved is not None and reserved.calls:
        batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id=worker_id)
    runs_refresh(outcome.run_ids, now=clock())
    return outcome
