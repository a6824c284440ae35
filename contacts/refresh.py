"""Re-trace the leads whose DNC status is stale, through the money path, after a quote.

``manage.py refresh_stale`` and the console's "Re-trace stale DNC" action both: pick the leads that
have a number kept out of Phone1..3 only because its DNC status is older than the maximum age
(:func:`stale_leads`), quote what the refresh may cost (:func:`quote`: leads, billable inputs after
de-duplication by signature, the worst case if every input matches, today's budget left), and only
then create ONE run of those leads with ``force`` (:func:`refresh`). The money path does the rest
as for any run: one provider call per distinct input (a forced run re-fetches an input once and
its duplicates reuse that answer), reserved inside the day's budget before it is sent (what the
budget does not pay waits, paused, for the next budget day), and every cent traceable to the run.
The sanitized-address retry is off for these runs, so an input is charged once at most.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.db.models import QuerySet

from contacts import filters
from contacts.models import Lead
from skiptrace import guards, normalize
from skiptrace.guards.budget import daily_cap_cents
from skiptrace.intake import LeadInput
from skiptrace.runs import run_create
from skiptrace.service import Policy

SOURCE_LABEL = "refresh_stale"


@dataclass(frozen=True)
class Quote:
    leads: int  # leads to re-trace
    inputs: int  # billable inputs after de-duplication (distinct signatures)
    invalid: int  # leads whose stored input no longer validates (they fail at intake, cost nothing)
    worst_case_cents: int  # every input matched
    budget_left_cents: int  # today's cap minus today's spend
    max_age_days: float

    @property
    def inputs_paid_today(self) -> int:
        """How many inputs today's budget pays at worst (the rest waits for the next budget day)."""
        price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
        return self.inputs if price <= 0 else min(self.inputs, max(0, self.budget_left_cents) // price)

    def lines(self) -> list[str]:
        out = [
            f"DNC status older than {self.max_age_days:g} days: {self.leads} lead(s) to re-trace",
            f"billable inputs after de-duplication: {self.inputs}"
            + (f" ({self.invalid} lead(s) no longer valid: they fail at intake, cost nothing)" if self.invalid else ""),
            f"worst case (every input matched): ${self.worst_case_cents / 100:,.2f}",
            f"budget left today: ${max(0, self.budget_left_cents) / 100:,.2f}",
        ]
        if self.inputs_paid_today < self.inputs:
            out.append(f"today's budget pays for {self.inputs_paid_today} of the {self.inputs} inputs; the rest "
                       "waits (run paused for the budget) until the next budget day or a resume past the budget")
        return out


def stale_leads(*, now: dt.datetime, older_than_days: float | None = None,
                leads: QuerySet[Lead] | None = None) -> QuerySet[Lead]:
    """The leads (of ``leads``, default all) with a number kept out only by a DNC status older than
    ``older_than_days`` (default ``DNC_MAX_AGE_DAYS``), by lead id."""
    base = Lead.objects.all() if leads is None else leads
    return filters.dnc_stale(base, "yes", now=now, max_age_days=older_than_days).order_by("lead_id")


def lead_inputs(leads: Iterable[Lead]) -> list[LeadInput]:
    """The leads as run inputs, from the fields they came in with (the run updates the same leads)."""
    return [
        LeadInput(lead_id=lead.lead_id, first_name=lead.first_name, last_name=lead.last_name, street=lead.street,
                  city=lead.city, state=lead.state, zip=lead.zip)
        for lead in leads
    ]


def quote(inputs: list[LeadInput], *, now: dt.datetime, max_age_days: float | None = None) -> Quote:
    """What re-tracing ``inputs`` may cost: inputs de-duplicated by their signature, as the run will."""
    signatures: set[str] = set()
    invalid = 0
    for lead in inputs:
        try:
            signatures.add(normalize.normalize_lead(**lead.normalize_kwargs()).signature)
        except normalize.InvalidLead:
            invalid += 1
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    return Quote(
        leads=len(inputs), inputs=len(signatures), invalid=invalid, worst_case_cents=len(signatures) * price,
        budget_left_cents=daily_cap_cents() - guards.budget_spent_cents_today(now),
        max_age_days=settings.DNC_MAX_AGE_DAYS if max_age_days is None else max_age_days,
    )


def refresh(inputs: list[LeadInput], *, now: dt.datetime, source_label: str = SOURCE_LABEL):
    """ONE forced run of ``inputs`` (the money path de-duplicates, budgets and charges once per input)."""
    return run_create(source_label=source_label, leads=inputs,
                      policy=Policy(force=True, fallback=False, retry_sanitized=False), now=now).run
