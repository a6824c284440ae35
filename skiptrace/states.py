"""Run state and wait reasons: the one place they are decoded.

A run carries independent facts, each in its own column:

- ``finished_at``: set once, when its last item settled;
- ``paused_by_operator``: an operator's pause (console, API); only an operator's resume clears it;
- ``soft_paused`` (unless ``override_budget``): it waits for the budget (``reason = daily_budget``:
  the next budget day, or a raised daily cap, clears it; ``reason = run_budget``: the run reached the
  per-run cap, a raised or removed per-run cap clears it — both in ``guards.budget_unpause``),
  whatever an operator did meanwhile;
- ``reason``: why its items wait, one of ``WaitReason`` (never the operator's pause, which has its
  own column: pausing and resuming a budget-paused run leaves it waiting for the budget).

From them: ``RunState`` (``queued`` | ``running`` | ``paused`` | ``finished``), computed in Python by
``run_state`` (``Run.state``) and in SQL by ``state_q`` (``Run.objects.in_state``), and the claim's
filter ``claimable_q`` (what the worker may take). The status API, the admin (badges, filters,
actions, index counts), the worker's claim and idle check, and the reports read them from here.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"


class WaitReason(models.TextChoices):
    """Why a run's items wait (``Run.reason``)."""

    DAILY_BUDGET = "daily_budget"  # with soft_paused: until the next budget day, or an override
    RUN_BUDGET = "run_budget"  # with soft_paused: the run reached the per-run cap; until it is raised, or an override
    CIRCUIT_OPEN = "circuit_open"  # until the breaker's probe succeeds
    PROVIDER_NOT_CONFIGURED = "provider_not_configured"  # until BATCHDATA_API_TOKEN is set
    PROVIDER_AUTH = "provider_auth"  # 401/403: until an operator fixes the token and resumes
    PROVIDER_OUT_OF_CREDITS = "provider_out_of_credits"  # 402 / 403 "Insufficient balance": top up, resume


# Waits on the provider: cleared as soon as a batch of the run gets past them (or by a resume).
PROVIDER_WAIT_REASONS = (
    WaitReason.CIRCUIT_OPEN,
    WaitReason.PROVIDER_NOT_CONFIGURED,
    WaitReason.PROVIDER_AUTH,
    WaitReason.PROVIDER_OUT_OF_CREDITS,
)
# What ``/status`` and the console show as the reason of a run an operator paused.
OPERATOR_PAUSE = "paused_by_operator"


def run_state(*, finished: bool, started: bool, operator_paused: bool, soft_paused: bool,
              override_budget: bool, reason: str | None) -> RunState:
    """The state of a run from its facts (the Python twin of ``state_q``)."""
    if finished:
        return RunState.FINISHED
    if operator_paused or (soft_paused and not override_budget) or reason in PROVIDER_WAIT_REASONS:
        return RunState.PAUSED
    return RunState.RUNNING if started else RunState.QUEUED


def shown_reason(*, finished: bool, operator_paused: bool, reason: str | None) -> str | None:
    """The one reason ``/status`` reports: the operator's pause first, else the wait reason."""
    if operator_paused and not finished:
        return OPERATOR_PAUSE
    return reason


def _q(prefix: str, **lookups: object) -> Q:
    return Q(**{f"{prefix}{k}": v for k, v in lookups.items()})


def waiting_q(prefix: str = "") -> Q:
    """Runs waiting for the budget or the provider (not the operator)."""
    return _q(prefix, soft_paused=True, override_budget=False) | _q(prefix, reason__in=PROVIDER_WAIT_REASONS)


def paused_q(prefix: str = "") -> Q:
    return _q(prefix, finished_at__isnull=True) & (_q(prefix, paused_by_operator=True) | waiting_q(prefix))


def state_q(state: str, prefix: str = "") -> Q:
    """SQL for ``RunState`` ``state`` (``prefix`` ``"run__"`` to filter items by their run's state)."""
    if state == RunState.FINISHED:
        return _q(prefix, finished_at__isnull=False)
    if state == RunState.PAUSED:
        return paused_q(prefix)
    if state == RunState.RUNNING:
        return _q(prefix, finished_at__isnull=True, started_at__isnull=False) & ~paused_q(prefix)
    if state == RunState.QUEUED:
        return _q(prefix, finished_at__isnull=True, started_at__isnull=True) & ~paused_q(prefix)
    raise ValueError(f"no run state {state!r}")


def claimable_q(prefix: str = "") -> Q:
    """Runs whose queued items a worker may claim: not finished, not paused by an operator, not
    waiting for the budget. Provider waits are not excluded: their items carry a ``not_before``."""
    return _q(prefix, finished_at__isnull=True, paused_by_operator=False) & (
        _q(prefix, soft_paused=False) | _q(prefix, override_budget=True)
    )


BUDGET_WAIT_REASONS = (WaitReason.DAILY_BUDGET, WaitReason.RUN_BUDGET)


def budget_paused(*, finished: bool, soft_paused: bool, override_budget: bool) -> bool:
    """A budget (the day's or the run's cap) stops the run now: an override would let it go on."""
    return not finished and soft_paused and not override_budget


def pausable_q(prefix: str = "") -> Q:
    """What an operator may pause: not finished, not already paused by an operator."""
    return _q(prefix, finished_at__isnull=True, paused_by_operator=False)


class RunQuerySet(models.QuerySet):
    def in_state(self, state: str) -> RunQuerySet:
        return self.filter(state_q(state))

    def paused(self) -> RunQuerySet:
        return self.filter(paused_q())

    def claimable(self) -> RunQuerySet:
        return self.filter(claimable_q())

    def budget_waiting(self) -> RunQuerySet:
        """Unfinished runs waiting for the budget (what a new budget day lets go on)."""
        return self.filter(soft_paused=True, finished_at__isnull=True)

    def budget_paused(self) -> RunQuerySet:
        """Unfinished runs a budget stops now (the daily or the per-run cap), with no override: what
        the console's "Resume past the budget" is for."""
        return self.filter(soft_paused=True, override_budget=False, finished_at__isnull=True)

    def state_counts(self) -> dict[str, int]:
        """``{state: runs}`` for the unfinished states, in one query (the admin index)."""
        from django.db.models import Count

        row = self.aggregate(**{s: Count("pk", filter=state_q(s)) for s in RunState.values if s != RunState.FINISHED})
        return {s: row[s] for s in RunState.values if s != RunState.FINISHED}
