"""Reads behind the metrics, the debug API and the ops console's summaries (no writes here).

Views and admin pages stay thin: they validate, call one of these, serialize.
"""

from __future__ import annotations

import datetime as dt
import json

from django.conf import settings
from django.db.models import Count, Q, Sum

from skiptrace import guards
from skiptrace.guards import budget as budget_guard
from skiptrace.models import OPEN_CALL_STATES, CallState, ItemStatus, ProviderCall, Run, RunItem
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
        "budget_cap_cents": budget_guard.daily_cap_cents(),
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
    """Today's spend against the current cap (the console's index and run page): settled cost and
    the worst case of calls still in flight apart, and their sum (what the cap is held against)."""
    caps = budget_guard.budget_caps()
    day = guards.budget_day(now)
    row = ProviderCall.objects.filter(budget_day=day).aggregate(
        settled=Sum("cost_cents", filter=~Q(state__in=OPEN_CALL_STATES), default=0),
        in_flight=Sum("estimate_cents", filter=Q(state__in=OPEN_CALL_STATES), default=0),
    )
    spent = row["settled"] + row["in_flight"]
    cap = caps.daily_cents
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    return {
        "settled_usd": row["settled"] / 100,
        "in_flight_usd": row["in_flight"] / 100,
        "spent_usd": spent / 100,
        "cap_usd": cap / 100,
        "left_usd": max(0, cap - spent) / 100,
        "run_cap_usd": None if caps.run_cents is None else caps.run_cents / 100,
        "from_env": not caps.stored,
        "pct": min(100, round(100.0 * spent / cap)) if cap else 100,
        "exhausted": price > 0 and cap - spent < price,
        "day": day,
        "tz": settings.SKIP_TRACE_BUDGET_TZ,
    }


# --- one definition of a run's provider calls and spend, for every page, API answer and report -----
#
# provider calls: ``provider_calls`` rows of the run (one per lead per provider request, written
#   before the request is sent; a sanitized retry is its own row; errors and lost calls count);
# provider requests: distinct ``batch_id`` of those rows (HTTP requests, up to 100 leads each);
# settled: cost of the rows that are final; in flight: the worst-case estimate of the open rows;
# matched leads: done items whose answer (fresh or cached) matched a person.


def run_money(run_ids) -> dict[str, dict]:
    """``{run_id: {provider_calls, provider_requests, settled_cents, in_flight_cents, lost_calls,
    unreadable_calls, bill_mismatch_calls}}`` in one query (runs without calls get zeros)."""
    ids = [r for r in dict.fromkeys(run_ids) if r]
    zero = {"provider_calls": 0, "provider_requests": 0, "settled_cents": 0, "in_flight_cents": 0,
            "lost_calls": 0, "unreadable_calls": 0, "bill_mismatch_calls": 0}
    out = {r: dict(zero) for r in ids}
    if not ids:
        return out
    rows = (
        ProviderCall.objects.filter(run_id__in=ids).values("run_id").annotate(
            provider_calls=Count("id"),
            provider_requests=Count("batch_id", distinct=True, filter=~Q(batch_id="")),
            settled_cents=Sum("cost_cents", filter=~Q(state__in=OPEN_CALL_STATES), default=0),
            in_flight_cents=Sum("estimate_cents", filter=Q(state__in=OPEN_CALL_STATES), default=0),
            lost_calls=Count("id", filter=Q(state=CallState.LOST)),
            unreadable_calls=Count("id", filter=Q(state=CallState.UNREADABLE)),
            bill_mismatch_calls=Count("id", filter=Q(bill_mismatch=True)),
        )
    )
    for row in rows:
        out[row.pop("run_id")] = row
    return out


def run_money_annotations() -> dict:
    """The same definitions as ``run_money``, as subqueries to annotate a queryset of runs with
    (``provider_calls``, ``provider_requests``, ``settled_cents``, ``in_flight_cents``)."""
    from django.db.models import IntegerField, OuterRef, Subquery
    from django.db.models.functions import Coalesce

    def sub(expr):
        q = ProviderCall.objects.filter(run_id=OuterRef("pk")).values("run_id").annotate(v=expr).values("v")
        return Coalesce(Subquery(q, output_field=IntegerField()), 0)

    return {
        "m_provider_calls": sub(Count("id")),
        "m_provider_requests": sub(Count("batch_id", distinct=True, filter=~Q(batch_id=""))),
        "m_settled_cents": sub(Sum("cost_cents", filter=~Q(state__in=OPEN_CALL_STATES))),
        "m_in_flight_cents": sub(Sum("estimate_cents", filter=Q(state__in=OPEN_CALL_STATES))),
    }


def run_matched_leads(run_id: str) -> int:
    """Done items of the run whose answer matched a person (the denominator of cost per match)."""
    return RunItem.objects.filter(run_id=run_id, status=ItemStatus.DONE, provider_call__matched=True).count()


def run_spend(run: Run) -> dict:
    """The run's money in one dict: calls, requests, settled and in-flight spend, cost per matched
    lead, and the per-run cap with what it has left (the run page, its status JSON, the report)."""
    money = run_money([run.run_id])[run.run_id]
    matched = run_matched_leads(run.run_id)
    caps = budget_guard.budget_caps()
    worst = money["settled_cents"] + money["in_flight_cents"]
    return {
        **money,
        "matched_leads": matched,
        "settled_usd": round(money["settled_cents"] / 100, 2),
        "in_flight_usd": round(money["in_flight_cents"] / 100, 2),
        "cost_per_match_usd": round(money["settled_cents"] / matched / 100, 4) if matched else None,
        "run_cap_usd": None if caps.run_cents is None else round(caps.run_cents / 100, 2),
        "run_cap_left_usd": None if caps.run_cents is None else round(max(0, caps.run_cents - worst) / 100, 2),
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
