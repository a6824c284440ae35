"""The guards on the money path, one module each, every one shared by all workers on all hosts.

- ``budget``: today's spend (settled cost + estimates of open calls) against the cap; the budget cut
  (``budget_fit``), ``budget_exhausted`` (admission), ``budget_unpause`` (a new budget day);
- ``breaker``: the circuit breaker (``breaker_check`` before reserving, ``breaker_record`` after each
  request, ``breaker_state``), its window of samples, which error kinds count;
- ``slots``: the concurrency gate (``slot_try_take`` marks a batch's calls ``sent``; ``slots_vacuum``);
- ``rate``: the rate limit (``rate_acquire``, ``rate_permit_fresh``) and the retry backoff;
- ``permit``: the gate right before the POST (``send_permit``, ``send_deadline``, ``last_look``,
  ``NotSent``), which takes a slot, then a permit, then looks at the breaker and the lease again;
- ``locks``: the row lock that serializes a check-then-act on PostgreSQL.

Callers use the names below (``guards.budget_fit``, …). A test or benchmark that replaces a guard
replaces it in its module (``guards.slots.slot_try_take``, ``guards.rate.rate_acquire``), where the
gate looks it up.
"""

from skiptrace.guards.breaker import (
    BreakerDecision,
    breaker_check,
    breaker_record,
    breaker_reset,
    breaker_retry_after,
    breaker_state,
    provider_status,
)
from skiptrace.guards.budget import (
    budget_day,
    budget_exhausted,
    budget_fit,
    budget_spent_cents,
    budget_spent_cents_today,
    budget_unpause,
    next_budget_day_start,
    seconds_to_next_budget_day,
)
from skiptrace.guards.permit import NotSent, last_look, send_deadline, send_permit
from skiptrace.guards.rate import (
    PERMIT_MAX_AGE_S,
    PERMIT_REFRESHES,
    backoff_seconds,
    limiter_conninfo,
    rate_acquire,
    rate_limited_backoff,
    rate_permit_fresh,
    reset_rate_limiter,
)
from skiptrace.guards.slots import slot_try_take, slots_vacuum

__all__ = [
    "PERMIT_MAX_AGE_S", "PERMIT_REFRESHES", "BreakerDecision", "NotSent", "backoff_seconds", "breaker_check",
    "breaker_record", "breaker_reset", "breaker_retry_after", "breaker_state", "budget_day", "budget_exhausted",
    "budget_fit", "budget_spent_cents", "budget_spent_cents_today", "budget_unpause", "last_look",
    "limiter_conninfo", "provider_status", "rate_acquire", "rate_limited_backoff", "rate_permit_fresh",
    "next_budget_day_start", "reset_rate_limiter", "send_deadline", "send_permit", "seconds_to_next_budget_day", "slot_try_take",
    "slots_vacuum",
]
