"""Reads behind the metrics, the debug API and the ops console's summaries (no writes here).

Views and admin pages stay thin: they validate, call one of these, serialize.
"""

from __future__ import annotations

import datetime as dt
import json

from django.conf import settings
from django.db.models import Count, Q, Sum

from skiptrace import guards
from skiptrace.models import CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.provider import sanitize_for_debug


def metrics_snapshot(now: dt.datetime) -> dict:
    """``/api/metrics``: provider calls by status class, cache hits, spend, breaker, RPS, queue."""
    calls = ProviderCall.objects.aggregate(
        c2=Count("id", filter=Q(status_code__gte=200, status_code__lt=300)),
        c4=Count("id", filter=Q(status_code__gte=400, status_code__lt=500)),
        c5=Count("id", filter=Q(status_code__gte=500)),
        lost=Count("id", filter=Q(state=CallState.LOST)),
        unreadable=Count("id", filter=Q(state=CallState.UNREADABLE)),
        spent=Sum("cost_cents"),
    )
    # provider requests whose matchCount billed more than their per-person matches
    mismatches = ProviderCall.objects.filter(bill_mismatch=True).values("batch_id").distinct().count()
    recent = ProviderCall.objects.filter(sent_at__gte=now - dt.timedelta(seconds=10)).values("batch_id").distinct().count()
    items = RunItem.objects.aggregate(
        cached=Count("id", filter=Q(status=ItemStatus.DONE, cached=True)),
        queued=Count("id", filter=Q(status=ItemStatus.QUEUED)),
        in_flight=Count("id", filter=Q(status=ItemStatus.IN_FLIGHT)),
    )
    return {
        "provider_calls_total": {"2xx": calls["c2"], "4xx": calls["c4"], "5xx": calls["c5"]},
        "cache_hits_total": items["cached"],
        "budget_spent_cents_total": calls["spent"] or 0,
        "circuit_state": guards.breaker_state(now),
        "rps_current": round(recent / 10, 2),
        "queue_depth": items["queued"],
        # extras
        "provider_calls_lost_total": calls["lost"],
        "provider_calls_unreadable_total": calls["unreadable"],
        "provider_bill_mismatch_total": mismatches,
        "in_flight": items["in_flight"],
        "budget_spent_cents_today": guards.budget_spent_cents_today(now),
        "budget_cap_cents": settings.SKIP_TRACE_DAILY_BUDGET_CENTS,
    }


def _sanitized(text: str | None):
    if not text:
        return None
    try:
        return sanitize_for_debug(json.loads(text))
    except ValueError:
        return None


def latest_calls(limit: int) -> list[dict]:
    """``/api/debug/skiptrace-latest``: the latest calls, sanitized (no full phone, email or token)."""
    return [
        {
            "provider_call_id": c.pk, "run_id": c.run_id, "lead_id": c.lead_id, "state": c.state,
            "status_code": c.status_code, "match_count": c.match_count, "matched": c.matched,
            "cost_cents": c.cost_cents, "attempt_reason": c.attempt_reason, "label": c.label or None,
            "request": _sanitized(c.request_json), "response": _sanitized(c.response_json),
            "error": c.error_text, "created_at": c.created_at.isoformat(),
        }
        for c in ProviderCall.objects.order_by("-id")[:limit]
    ]


def budget_summary(now: dt.datetime) -> dict:
    """Today's spend against the cap (the console's index and run page)."""
    spent = guards.budget_spent_cents_today(now)
    cap = settings.SKIP_TRACE_DAILY_BUDGET_CENTS
    return {
        "spent_usd": spent / 100,
        "cap_usd": cap / 100,
        "pct": min(100, round(100.0 * spent / cap)) if cap else 100,
        "exhausted": guards.budget_exhausted(now),
        "day": guards.budget_day(now),
        "tz": settings.SKIP_TRACE_BUDGET_TZ,
    }


def guard_summary(now: dt.datetime) -> dict:
    """The console index's top: spend, breaker, provider readiness, runs by state."""
    breaker = guards.breaker_state(now)
    return {
        "budget": budget_summary(now),
        "breaker": breaker,
        "breaker_retry_s": int(guards.breaker_retry_after(now)) if breaker != "closed" else 0,
        "provider": "not configured" if not settings.BATCHDATA_API_TOKEN
        else ("ready" if breaker == "closed" else breaker.replace("_", "-")),
        "runs": Run.objects.state_counts(),
    }
