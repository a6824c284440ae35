"""What a provider error does to its calls and items: one row per error kind.

``record.record_error`` looks the error up here instead of deciding in an if/elif chain. Columns:
the calls' final state, what they cost, and what happens to the items (the functions below).

| kind                         | calls        | cost                               | items                                                  |
|------------------------------|--------------|------------------------------------|--------------------------------------------------------|
| ``unreadable``               | unreadable   | max(estimate, matchCount x price)  | failed ``provider_unreadable``, not re-sent by itself  |
| ``timeout``/``connection``, maybe sent | lost | estimate                         | failed ``provider_outcome_unknown``, same rule         |
| ``timeout``/``connection``, not sent   | errored | 0                             | retried with backoff (``retry``)                       |
| ``http_5xx``                 | errored      | 0                                  | retried with backoff up to ``SKIP_TRACE_MAX_ATTEMPTS`` |
| ``rate_limited``             | errored      | 0                                  | wait ``Retry-After`` (or backoff), never given up      |
| ``auth`` / ``out_of_credits``| errored      | 0                                  | wait, reason ``provider_auth`` / ``provider_out_of_credits`` (the breaker opens at once) |
| ``http_4xx``                 | errored      | 0                                  | failed ``provider_rejected``                           |

Every item action serves ``policy.fallback`` runs from an expired answer first where it would fail
or wait. The breaker's side (which kinds count as failures, which open it at once) lives with the
breaker, ``skiptrace.guards.breaker``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db.models import F

from skiptrace import guards
from skiptrace.models import CallState, ItemStatus, RunItem
from skiptrace.money.items import BatchOutcome, fail, requeue, serve_stale_or_fail, serve_stale_or_wait
from skiptrace.provider import ProviderError
from skiptrace.states import WaitReason

ItemAction = Callable[[Sequence[RunItem], ProviderError, str, dt.datetime, BatchOutcome, "Rule"], None]


def fail_outcome_unknown(items, exc, detail, now, outcome, rule) -> None:
    """The request may have been billed and its answer is unknown: never re-sent by itself."""
    serve_stale_or_fail(items, now=now, error=f"provider_outcome_unknown: {detail}", outcome=outcome)


def wait_retry_after(items, exc, detail, now, outcome, rule) -> None:
    delay = exc.retry_after if exc.retry_after is not None else guards.rate_limited_backoff()
    requeue(items, now=now, delay_s=delay, reason=None)
    outcome.waiting += len(items)


def wait_for_operator(items, exc, detail, now, outcome, rule) -> None:
    """Fail closed: the breaker is open (``guards.breaker_record``), the items wait for an operator."""
    serve_stale_or_wait(items, now=now, delay_s=settings.CIRCUIT_PROBE_INTERVAL_S, reason=rule.wait_reason,
                        outcome=outcome)


def reject(items, exc, detail, now, outcome, rule) -> None:
    fail(items, now=now, error=f"provider_rejected: {detail}")
    outcome.failed += len(items)


def retry_with_backoff(items, exc, detail, now, outcome, rule) -> None:
    """Transient (5xx, a connection refused before sending): retried with backoff, failed
    ``provider_error`` after ``SKIP_TRACE_MAX_ATTEMPTS``."""
    limit = settings.SKIP_TRACE_MAX_ATTEMPTS
    retry = [i for i in items if i.attempt + 1 < limit]
    give_up = [i for i in items if i.attempt + 1 >= limit]
    if give_up:
        serve_stale_or_fail(give_up, now=now, error=f"provider_error: {detail} (after {limit} attempts)", outcome=outcome)
    for item in retry:
        RunItem.objects.filter(pk=item.pk).update(
            status=ItemStatus.QUEUED, attempt=item.attempt + 1, lease_until=None, last_error=detail,
            not_before=now + dt.timedelta(seconds=guards.backoff_seconds(item.attempt + 1)), updated_at=now,
        )
    outcome.waiting += len(retry)


@dataclass(frozen=True)
class Rule:
    call_state: CallState
    cost: str  # "none" (0), "estimate" (each call's worst case), "bill" (see record.record_unreadable)
    items: ItemAction | None  # None: ``record.record_unreadable`` settles the items itself
    wait_reason: WaitReason | None = None

    def cost_value(self):
        """The calls' ``cost_cents`` as an update expression."""
        return F("estimate_cents") if self.cost == "estimate" else 0


_LOST = Rule(CallState.LOST, "estimate", fail_outcome_unknown)
_RETRY = Rule(CallState.ERRORED, "none", retry_with_backoff)

# (kind, maybe_sent) -> rule; maybe_sent None: whichever.
RULES: dict[tuple[str, bool | None], Rule] = {
    ("unreadable", None): Rule(CallState.UNREADABLE, "bill", None),
    ("timeout", True): _LOST,
    ("connection", True): _LOST,
    ("timeout", False): _RETRY,
    ("connection", False): _RETRY,
    ("http_5xx", None): _RETRY,
    ("rate_limited", None): Rule(CallState.ERRORED, "none", wait_retry_after),
    ("auth", None): Rule(CallState.ERRORED, "none", wait_for_operator, WaitReason.PROVIDER_AUTH),
    ("out_of_credits", None): Rule(CallState.ERRORED, "none", wait_for_operator, WaitReason.PROVIDER_OUT_OF_CREDITS),
    ("http_4xx", None): Rule(CallState.ERRORED, "none", reject),
}


def rule_for(exc: ProviderError) -> Rule:
    """The row for this error (an unknown kind is treated as transient)."""
    return RULES.get((exc.kind, bool(exc.maybe_sent))) or RULES.get((exc.kind, None)) or _RETRY
