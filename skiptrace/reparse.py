"""Read stored unreadable answers again, after a parser fix, and serve their items without paying again.

A 2xx answer the parser could not map completely is settled like a lost call (``unreadable``,
costed) and its body is kept, token-free, on the batch's first call. Once the parser is fixed,
``manage.py skiptrace_reparse`` hands each such body to the current parser with the requests the
batch sent (rebuilt from the calls' audit copies, in the order they were sent). A body that now
reads is recorded as the answer it always was:

- its calls become ``completed`` and their cost becomes the bill rule's (``money.bill_spread``):
  the provider's bill is now known, so the worst case taken at the time is replaced by it;
- the cache learns the answers (never over a newer answer for the same input);
- the items that failed with ``provider_unreadable`` are served from them, with no new call;
- finished runs get their counters, report and ``enriched.csv`` made again.

Nothing here talks to the provider.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q

from skiptrace import money
from skiptrace.bulk import insert_rows, update_rows
from skiptrace.models import CacheEntry, CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.provider import PROVIDER, ProviderError, TraceRequest, parse_response

log = logging.getLogger("convexa.reparse")

UNREADABLE_ERROR_PREFIX = "provider_unreadable"


@dataclass
class BatchReparse:
    batch_id: str
    call_ids: list[int]
    served: bool
    items_served: int = 0
    runs: list[str] = field(default_factory=list)
    cost_cents_before: int = 0
    cost_cents_after: int = 0
    problem: str = ""  # why it is still unreadable


@dataclass
class ReparseReport:
    batches: list[BatchReparse] = field(default_factory=list)

    @property
    def served_batches(self) -> list[BatchReparse]:
        return [b for b in self.batches if b.served]

    @property
    def items_served(self) -> int:
        return sum(b.items_served for b in self.batches)

    def as_dict(self) -> dict:
        return {
            "batches_examined": len(self.batches),
            "batches_served": len(self.served_batches),
            "calls_served": sum(len(b.call_ids) for b in self.served_batches),
            "items_served": self.items_served,
            "still_unreadable": [{"batch_id": b.batch_id, "provider_call_ids": b.call_ids, "problem": b.problem}
                                 for b in self.batches if not b.served],
            "served": [{"batch_id": b.batch_id, "provider_call_ids": b.call_ids, "items_served": b.items_served,
                        "runs": b.runs, "cost_cents_before": b.cost_cents_before,
                        "cost_cents_after": b.cost_cents_after} for b in self.served_batches],
        }


def unreadable_batches(*, call_ids: Sequence[int] | None = None, since: dt.datetime | None = None) -> list[str]:
    """The batch ids of unreadable calls, oldest first (a call id selects its whole batch)."""
    calls = ProviderCall.objects.filter(state=CallState.UNREADABLE)
    if call_ids:
        calls = calls.filter(id__in=list(call_ids))
    if since is not None:
        calls = calls.filter(Q(finished_at__gte=since) | Q(finished_at__isnull=True, created_at__gte=since))
    seen: dict[str, None] = {}
    for batch_id in calls.order_by("id").values_list("batch_id", flat=True):
        seen.setdefault(batch_id, None)
    return list(seen)


def _request_of(call: ProviderCall) -> TraceRequest:
    audit = json.loads(call.request_json or "{}")
    address = audit.get("propertyAddress") or {}
    name = audit.get("name") or {}
    return TraceRequest(
        request_id=str(call.pk),
        street=address.get("street", ""),
        city=address.get("city", ""),
        state=address.get("state", ""),
        zip=address.get("zip", ""),
        first=name.get("first", ""),
        last=name.get("last", ""),
    )


def reparse(*, call_ids: Sequence[int] | None = None, since: dt.datetime | None = None,
            now: dt.datetime | None = None) -> ReparseReport:
    """Read every selected unreadable batch again; serve the ones the parser now reads."""
    from django.utils import timezone

    now = now or timezone.now()
    report = ReparseReport()
    for batch_id in unreadable_batches(call_ids=call_ids, since=since):
        report.batches.append(_reparse_batch(batch_id, now=now))
    finished = sorted({r for b in report.served_batches for r in b.runs})
    if finished:
        money.runs_refresh(finished, now=now, force=True)
        _remake_reports(finished)
    return report


def _reparse_batch(batch_id: str, *, now: dt.datetime) -> BatchReparse:
    calls = list(ProviderCall.objects.filter(batch_id=batch_id, state=CallState.UNREADABLE).order_by("id"))
    result = BatchReparse(batch_id=batch_id, call_ids=[c.pk for c in calls], served=False,
                          cost_cents_before=sum(c.cost_cents for c in calls))
    holder = next((c for c in calls if c.response_json), None)
    if holder is None:
        result.problem = "no stored answer"
        return result
    try:
        body = json.loads(holder.response_json)
    except ValueError:
        result.problem = "the stored answer is not JSON"
        return result
    try:
        parsed, match_count, provider_request_id = parse_response(
            body, [_request_of(c) for c in calls], version=holder.api_version or "v1")
    except ProviderError as exc:
        result.problem = exc.detail
        return result
    with transaction.atomic():
        # Another reparse may have served this batch since we read it: only calls still unreadable.
        still = set(ProviderCall.objects.filter(id__in=result.call_ids, state=CallState.UNREADABLE)
                    .select_for_update().values_list("id", flat=True))
        if still != set(result.call_ids):
            result.problem = "served by another reparse meanwhile"
            return result
        result.items_served, result.runs = _record(calls, parsed, match_count, provider_request_id, holder, now=now)
    result.served = True
    result.cost_cents_after = sum(c.cost_cents for c in calls)
    log.info("reparse: batch %s served %d items from %d stored answers; cost %d -> %d cents", batch_id,
             result.items_served, len(calls), result.cost_cents_before, result.cost_cents_after)
    return result


def _record(calls: list[ProviderCall], parsed: list, match_count: int, provider_request_id: str | None,
            holder: ProviderCall, *, now: dt.datetime) -> tuple[int, list[str]]:
    """Inside the caller's transaction: calls completed, cache learned, failed items served."""
    entries, served = money.complete_calls(calls, parsed, match_count, provider_request_id,
                                           answered_at=holder.created_at, now=now)
    answers = {answer.call_id: answer for answer in served}
    for call in calls:
        call.error_text = f"reparsed at {now.isoformat()}; was: {call.error_text or ''}"[:1000]
    update_rows(ProviderCall, calls, ["state", "response_json", "payload_hash", "cost_cents", "bill_mismatch",
                                      "matched", "match_count", "parsed_contacts_json", "provider_request_id",
                                      "error_text"])
    # The cache learns an answer only where it has none for that input, or an older one.
    existing = dict(CacheEntry.objects.filter(provider=PROVIDER, idempotency_key__in=[e.idempotency_key for e in entries])
                    .values_list("idempotency_key", "created_at"))
    fresh = [e for e in entries if e.idempotency_key not in existing or existing[e.idempotency_key] < e.created_at]
    insert_rows(CacheEntry, fresh, conflict=["provider", "idempotency_key"],
                update_fields=["signature", "payload_hash", "response_json", "parsed_contacts_json", "ttl_expires_at",
                               "created_at", "last_seen", "provider_call"])
    items = list(RunItem.objects.filter(provider_call_id__in=list(answers), status=ItemStatus.FAILED,
                                        last_error__startswith=UNREADABLE_ERROR_PREFIX).select_related("run"))
    if items:
        money.conclude_answers([(i, answers[i.provider_call_id]) for i in items], now=now)
        # A sanitized retry scheduled by an answer reopens its finished run, like a resume does.
        requeued = {i.run_id for i in items if i.status == ItemStatus.QUEUED}
        if requeued:
            Run.objects.filter(run_id__in=requeued).update(finished_at=None, report_written_at=None)
            from skiptrace.wakeup import notify_work

            notify_work()
    return len(items), sorted({i.run_id for i in items})


def _remake_reports(run_ids: Sequence[str]) -> None:
    from skiptrace.reports import write_run_artifacts

    for run in Run.objects.filter(run_id__in=list(run_ids), finished_at__isnull=False):
        try:
            write_run_artifacts(run)
        except OSError:
            log.exception("reparse: could not rewrite the report of run %s", run.run_id)
