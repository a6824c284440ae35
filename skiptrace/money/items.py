"""What happens to items: served (from an answer, or its one sanitized retry started), put back to
wait, failed with a reason. Bulk statements only; every stage settles items through here.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Q

from contacts import services as contact_services
from skiptrace.bulk import update_rows
from skiptrace.models import AttemptReason, CacheEntry, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.money.cache import Answer, cache_key, cache_lookup, usable
from skiptrace.money.policy import PREDECESSOR_LABEL
from skiptrace.money.trail import log_call
from skiptrace.provider import PROVIDER

log = logging.getLogger("convexa.service")

LAST_SEEN_RESOLUTION_S = 600  # a cache entry's last_seen is kept to ten minutes


@dataclass
class BatchOutcome:
    claimed: int = 0
    cached: int = 0
    provider_items: int = 0
    waiting: int = 0
    failed: int = 0
    put_back: int = 0  # claimed beyond one provider batch and not cached: back in the queue, untouched
    budget_paused: bool = False
    circuit_open: bool = False
    run_ids: set[str] = field(default_factory=set)


def serve_from_cache(items: Sequence[RunItem], *, now: dt.datetime, outcome: BatchOutcome,
                     entries: Sequence[CacheEntry] | None = None) -> list[RunItem]:
    """Serve what the caches can; return the items that still need the provider. ``entries``:
    their L2 rows, read already."""
    answers = cache_lookup([i.active_signature for i in items], now, entries=entries)
    pending: list[RunItem] = []
    served: list[tuple[RunItem, Answer]] = []
    for item in items:
        answer = answers.get(item.active_signature)
        if answer is not None and usable(answer, item):
            served.append((item, answer))
        else:
            pending.append(item)
    if served:
        outcome.cached += len(served)
        conclude(served, cached=True, now=now)
        # last_seen to LAST_SEEN_RESOLUTION_S: an entry seen again within it is not rewritten (a
        # cache row carries its answer; rewriting 1,000 of them was a tenth of a cached claim)
        CacheEntry.objects.filter(
            provider=PROVIDER, idempotency_key__in={cache_key(i.active_signature) for i, _ in served}
        ).filter(Q(last_seen__isnull=True) | Q(last_seen__lt=now - dt.timedelta(seconds=LAST_SEEN_RESOLUTION_S))
                 ).update(last_seen=now)
    return pending


def wants_sanitized_retry(item: RunItem, answer: Answer) -> bool:
    """The spec's rule: zero contacts AND a unit marker, on the primary attempt only (at most once)."""
    return (
        not answer.has_contacts
        and item.has_unit
        and item.attempt_reason == AttemptReason.PRIMARY
        and item.run.policy_retry_sanitized
        and bool(item.sanitized_signature)
        and item.sanitized_signature != item.signature
    )


def conclude(served: Sequence[tuple[RunItem, Answer]], *, cached: bool, now: dt.datetime,
             answered_now: bool = True) -> None:
    """Finish items with their answers, or start their one sanitized retry. Bulk statements only.

    ``answered_now``: a fresh (not cached) answer was given when its ``Answer`` was made, so that
    is its phones' DNC time; False (``skiptrace.reparse``): the time is looked up from its call."""
    done: list[tuple[RunItem, Answer]] = []
    retry: list[RunItem] = []
    for item, answer in served:
        if wants_sanitized_retry(item, answer):
            item.status, item.attempt_reason = ItemStatus.QUEUED, AttemptReason.ADDRESS_SANITIZED
            item.predecessor_call_id = item.provider_call_id = answer.call_id
            item.lease_until = item.not_before = None
            item.updated_at = now
            retry.append(item)
            log_call("retry_sanitized", answer.call_id, item.run_id, item.lead_id, level=logging.INFO,
                     predecessor_call=answer.call_id)
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
            # a fresh answer's time is known here (its call's finished_at): no query to look it up
            [contact_services.ContactsUpdate(lead_id=i.lead_id, run_id=i.run_id, contacts=a.contacts,
                                             provider_call_id=a.call_id, cached=cached, stale=a.stale,
                                             answered_at=a.created_at if answered_now and not cached else None)
             for i, a in done],
            now=now, fresh=answered_now and not cached,
        )


def conclude_answers(served: Sequence[tuple[RunItem, Answer]], *, now: dt.datetime) -> None:
    """Serve items from answers recorded outside a batch (``skiptrace.reparse``): as fresh answers."""
    conclude(served, cached=False, now=now, answered_now=False)


def requeue(items: Sequence[RunItem], *, now: dt.datetime, delay_s: float | None, reason: str | None) -> None:
    not_before = now + dt.timedelta(seconds=delay_s) if delay_s else None
    RunItem.objects.filter(id__in=[i.id for i in items]).update(
        status=ItemStatus.QUEUED, lease_until=None, not_before=not_before, updated_at=now
    )
    if reason is not None:
        Run.objects.filter(run_id__in={i.run_id for i in items}).update(reason=reason)


def fail(items: Sequence[RunItem], *, now: dt.datetime, error: str, call_id: int | None = None) -> None:
    update = dict(status=ItemStatus.FAILED, lease_until=None, last_error=error[:1000], updated_at=now)
    if call_id is not None:
        update["provider_call_id"] = call_id
    RunItem.objects.filter(id__in=[i.id for i in items]).update(**update)


def serve_stale(items: Sequence[RunItem], *, now: dt.datetime, outcome: BatchOutcome) -> list[RunItem]:
    """Serve items of ``policy.fallback`` runs from an answer even if expired (marked stale);
    return the rest."""
    wanted = [i.active_signature for i in items if i.run.policy_fallback]
    stale = cache_lookup(wanted, now, include_expired=True) if wanted else {}
    served = [(i, stale[i.active_signature]) for i in items if i.run.policy_fallback and i.active_signature in stale]
    if served:
        conclude(served, cached=True, now=now)
        outcome.cached += len(served)
    return [i for i in items if not (i.run.policy_fallback and i.active_signature in stale)]


def serve_stale_or_wait(items: Sequence[RunItem], *, now: dt.datetime, delay_s: float, reason: str,
                         outcome: BatchOutcome) -> None:
    """``policy.fallback``: an expired answer, marked stale, beats waiting for the provider."""
    rest = serve_stale(items, now=now, outcome=outcome)
    if rest:
        requeue(rest, now=now, delay_s=delay_s, reason=reason)
        outcome.waiting += len(rest)


def serve_stale_or_fail(items: Sequence[RunItem], *, now: dt.datetime, error: str, outcome: BatchOutcome) -> None:
    rest = serve_stale(items, now=now, outcome=outcome)
    if rest:
        fail(rest, now=now, error=error)
        outcome.failed += len(rest)
