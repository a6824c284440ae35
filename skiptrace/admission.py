"""Admission: may new work come in now? One rule for every entry point.

``admit`` is called by the API (a new run, one lead now), the console's upload and the CLI. It looks
at three guards, cheapest first: the provider configured (``BATCHDATA_API_TOKEN``), the circuit
breaker, today's budget. Only when one of them is against the work does it ask what the work needs
from the provider: a lead served free from the cache (a fresh answer, not forced; or any answer
under ``policy.fallback``) needs nothing, so a run whose leads are all cache hits is admitted while
the budget is spent, since it costs nothing.

What a refusal means depends on the work, not on the entry point:

- **one lead now** (``synchronous``): refused by any of the three (503 ``ProviderNotConfigured``,
  503 ``CircuitOpen``, 429 ``BudgetPause``), before anything is created: it cannot wait.
- **a run** (queued work): refused by the budget (429 ``BudgetPause`` with ``retry_after``); a
  missing token or an open breaker only make it wait (``waits_for``, the run's wait reason).

The API answers a refusal with its status code. The console and the CLI are the operator's tools
(the operator is who can resume past the budget), so they create the run anyway and show the
refusal as a warning: the run waits for the next budget day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from django.conf import settings

from skiptrace import guards
from skiptrace.guards import budget as budget_guard
from skiptrace.states import WaitReason


@dataclass(frozen=True)
class Refusal:
    error: str  # the API's error code
    status: int
    detail: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Admission:
    refusal: Refusal | None = None
    waits_for: str | None = None  # admitted, but the run's items will wait for this (a WaitReason)

    @property
    def admitted(self) -> bool:
        return self.refusal is None


ADMITTED = Admission()


def budget_refusal(now: dt.datetime) -> Refusal:
    """429 BudgetPause, with what an integrator needs to plan: the current cap (``guards.budget_caps``:
    the console's setting, else the environment), today's spend (settled plus the worst case in
    flight), and when the next budget day starts."""
    retry_after = guards.seconds_to_next_budget_day(now)
    resets_at = guards.next_budget_day_start(now)
    return Refusal("BudgetPause", 429, "today's skip-trace budget is spent", {
        "reason": WaitReason.DAILY_BUDGET.value, "retry_after": retry_after,
        "daily_cap_usd": round(budget_guard.daily_cap_cents() / 100, 2),
        "spent_usd": round(guards.budget_spent_cents_today(now) / 100, 2),
        "resets_at": resets_at.isoformat().replace("+00:00", "Z"),
    })


def operator_warning(refusal: Refusal) -> str:
    """What the console and the CLI tell an operator whose run was created despite a refusal."""
    if refusal.error == "BudgetPause":
        return ("Today's budget is spent: the run waits for the next budget day, "
                "unless you resume it past the budget.")
    return f"{refusal.detail}: the run waits."


def admit(
    signatures: Iterable[str] | Callable[[], Iterable[str]],
    *,
    policy,
    now: dt.datetime,
    configured: bool | None = None,
    synchronous: bool = False,
) -> Admission:
    """Decide whether work whose leads have these signatures may come in now.

    ``signatures`` may be a callable: it is only evaluated (leads normalized, the cache read) when a
    guard is against the work. ``configured`` defaults to whether ``BATCHDATA_API_TOKEN`` is set.
    """
    configured = bool(settings.BATCHDATA_API_TOKEN) if configured is None else configured
    breaker_open = guards.breaker_state(now) == "open"
    budget_spent = guards.budget_exhausted(now)
    if configured and not breaker_open and not budget_spent:
        return ADMITTED
    if not _needs_provider(signatures() if callable(signatures) else signatures, policy=policy, now=now):
        return ADMITTED
    if not configured and synchronous:
        return Admission(Refusal("ProviderNotConfigured", 503, "BATCHDATA_API_TOKEN is not set", {"retry_after": 60}))
    if breaker_open and synchronous:
        return Admission(Refusal("CircuitOpen", 503, "the provider circuit is open",
                                 {"retry_after": int(guards.breaker_retry_after(now)) + 1}))
    if budget_spent:
        return Admission(budget_refusal(now))
    return Admission(waits_for=WaitReason.PROVIDER_NOT_CONFIGURED if not configured else WaitReason.CIRCUIT_OPEN)


def _needs_provider(signatures: Iterable[str], *, policy, now: dt.datetime) -> bool:
    """Does any lead need the provider? Not one the cache serves: a fresh answer (unless forced),
    or any answer, even expired, under ``policy.fallback``."""
    from skiptrace.money import cache_lookup  # the money path imports guards; admission sits above both

    wanted = set(signatures)
    if not wanted:
        return False
    if policy.force and not policy.fallback:
        return True
    answers = cache_lookup(wanted, now, include_expired=policy.fallback)
    for sig in wanted:
        answer = answers.get(sig)
        if answer is None:
            return True
        if policy.fallback:
            continue
        if answer.stale or policy.force:
            return True
    return False


def lead_signatures(leads: Iterable) -> list[str]:
    """The signatures of the leads that pass intake (``LeadInput``s); invalid ones need nothing."""
    return [sig for sig in _signatures(leads) if sig is not None]


def _signatures(leads: Iterable) -> Iterator[str | None]:
    """Each lead's signature, or None for a lead intake refuses."""
    from skiptrace import normalize

    for lead in leads:
        if lead.problem:
            yield None
            continue
        try:
            yield normalize.normalize_lead(first_name=lead.first_name, last_name=lead.last_name, street=lead.street,
                                           city=lead.city, state=lead.state, zip=lead.zip).signature
        except normalize.InvalidLead:
            yield None


def run_signatures(run) -> Callable[[], list[str]]:
    """The signatures of a created run's valid items (for the console and the CLI, which stream)."""
    from skiptrace.models import RunItem

    return lambda: list(RunItem.objects.filter(run=run).exclude(signature="").values_list("signature", flat=True))


def quote(leads: list, *, policy, now: dt.datetime) -> dict:
    """What a run of ``leads`` would cost, before anything is created or sent (``?dry_run=1``).

    ``rows``: leads in the request; ``invalid``: those intake refuses (they would be failed items);
    ``duplicates``: leads whose normalized input another lead of the request already has (one
    call serves them all); ``cached``: distinct inputs the cache answers for free (none with
    ``force``); ``billable``: the distinct inputs left, each at most one call; ``worst_case_usd``:
    billable x price, as if every one matched; ``budget_left_usd``: what today's cap (the current
    one, ``guards.budget_caps``) has left.
    """
    from skiptrace.money import cache_lookup

    all_signatures = list(_signatures(leads))
    signatures = [sig for sig in all_signatures if sig is not None]
    invalid = len(all_signatures) - len(signatures)
    distinct = set(signatures)
    cached = 0 if policy.force else len(cache_lookup(distinct, now))
    billable = len(distinct) - cached
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    left = budget_guard.budget_left_cents(now)
    return {
        "rows": len(leads), "invalid": invalid, "duplicates": len(signatures) - len(distinct), "cached": cached,
        "billable": billable, "worst_case_usd": round(billable * price / 100, 2),
        "budget_left_usd": round(left / 100, 2),
    }
