"""Leases: take back what dead workers held (lost calls, abandoned reservations, expired claims).
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction

from skiptrace.models import CallState, InFlightBatch, ItemStatus, ProviderCall, RunItem
from skiptrace.money.counters import runs_refresh
from skiptrace.money.trail import id_ranges, log_calls

log = logging.getLogger("convexa.service")


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
        log_calls("lost", sent_calls, by="reaper")
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
        # PostgreSQL's in-flight rows past their lease count no longer; the trigger removed those
        # whose calls just became lost, and this removes any it missed (two transactions settling
        # halves of one batch at once: each still saw the other's calls as sent)
        InFlightBatch.objects.filter(lease_until__lt=now).delete()
        run_ids = {r for _, r in expired} | set(
            ProviderCall.objects.filter(id__in=lost_ids).exclude(run_id=None).values_list("run_id", flat=True)
        )
    if sent or abandoned or expired:
        log.warning("reaper: %d calls lost (provider_call_ids=%s), %d items failed, %d reservations released, "
                    "%d items requeued", len(sent), id_ranges(lost_ids), failed, abandoned, len(expired))
        runs_refresh(run_ids, now=now, force=True)
    return {"lost": len(sent), "failed": failed, "abandoned": abandoned, "requeued": len(expired)}
