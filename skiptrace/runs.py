"""Run lifecycle: create (from JSON or a streamed CSV), resume, pause, status. No provider calls here."""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from contacts.models import Lead
from contacts.services import leads_upsert
from skiptrace import guards, normalize
from skiptrace.admission import admit, budget_refusal
from skiptrace.bulk import analyze_after_bulk, insert_rows, row_factory
from skiptrace.dbconn import release_connection
from skiptrace.intake import IntakeError, LeadInput, derive_lead_id
from skiptrace.models import AttemptReason, ItemStatus, Run, RunItem
from skiptrace.money import Policy, runs_refresh
from skiptrace.states import PROVIDER_WAIT_REASONS, RunState
from skiptrace.wakeup import notify_work

log = logging.getLogger("convexa.runs")
CHUNK = 1000


@dataclass(frozen=True)
class CreatedRun:
    run: Run
    total: int
    invalid: int


def new_run_id() -> str:
    return f"run_{uuid.uuid4().hex[:16]}"


def _display_address(lead: LeadInput) -> str:
    tail = " ".join(p for p in (lead.state, lead.zip) if p)
    return ", ".join(p for p in (lead.street, lead.city, tail) if p)


def _display_owner(lead: LeadInput) -> str:
    return " ".join(p for p in (lead.first_name, lead.last_name) if p)


_item_row = row_factory(RunItem)
_lead_row = row_factory(Lead)


def _build(lead: LeadInput, *, run: Run, position: int, now: dt.datetime) -> tuple[Any, Any | None]:
    """One run item row (and its lead row) from one input lead; a bad lead becomes a failed item."""
    item = _item_row(
        run_id=run.run_id, position=position, address_display=_display_address(lead),
        owner_display=_display_owner(lead), status=ItemStatus.QUEUED, updated_at=now,
    )
    problem = lead.problem
    norm = None
    if problem is None:
        try:
            norm = normalize.normalize_lead(
                first_name=lead.first_name, last_name=lead.last_name, street=lead.street,
                city=lead.city, state=lead.state, zip=lead.zip,
            )
        except normalize.InvalidLead as exc:
            problem = exc.reason
    item.lead_id = lead.lead_id or derive_lead_id(lead)
    if norm is None:
        item.status, item.last_error, item.idem_key = ItemStatus.FAILED, f"invalid_input: {problem}", ""
        return item, None
    item.idem_key = normalize.idempotency_key(norm.signature, 0)
    item.signature, item.sanitized_signature, item.has_unit = norm.signature, norm.sanitized_signature, norm.has_unit
    item.normalized_address, item.normalized_person = norm.address, norm.person
    item.street, item.street_sanitized = norm.street, norm.street_sanitized
    item.city, item.state, item.zip, item.first, item.last = norm.city, norm.state, norm.zip, norm.first, norm.last
    if norm.is_entity:
        item.owner_display = item.owner_display or norm.entity_name
    row = _lead_row(
        lead_id=item.lead_id, first_name=lead.first_name, last_name=lead.last_name, street=lead.street,
        city=lead.city, state=lead.state, zip=lead.zip, address=item.address_display, owner=item.owner_display,
        is_entity=norm.is_entity, signature=norm.signature, created_at=now, updated_at=now,
    )
    return item, row


def run_create(
    *, source_label: str | None, leads: Iterable[LeadInput], policy: Policy, now: dt.datetime | None = None
) -> CreatedRun:
    """Create a run and its queued items, streaming ``leads`` in chunks (a 100k-row CSV never sits in
    memory). All or nothing: an error while reading (e.g. IntakeError past the row limit) creates nothing.
    """
    now = now or timezone.now()
    total = invalid = 0
    with transaction.atomic():
        run = Run.objects.create(
            run_id=new_run_id(), source_label=source_label, created_at=now, policy_force=policy.force,
            policy_fallback=policy.fallback, policy_retry_sanitized=policy.retry_sanitized,
        )
        for chunk in _chunks(leads, CHUNK):
            items, rows = [], {}
            for lead in chunk:
                item, row = _build(lead, run=run, position=total, now=now)
                total += 1
                items.append(item)
                if row is None:
                    invalid += 1
                else:
                    rows[row.lead_id] = row  # one lead id twice in a chunk: the later row wins
            leads_upsert(list(rows.values()))
            insert_rows(RunItem, items)
        if total == 0:  # a header-only file: refused like an empty JSON list, nothing is created
            raise IntakeError("the file has a header but no lead rows")
        Run.objects.filter(run_id=run.run_id).update(total=total, queued=total - invalid, failed=invalid)
        notify_work()  # delivered at commit: idle workers claim at once
    runs_refresh([run.run_id], now=now, force=True)
    run.refresh_from_db()
    log.info("run %s created: %d leads (%d invalid) label=%r", run.run_id, total, invalid, source_label)
    analyze_after_bulk(RunItem, total)
    return CreatedRun(run=run, total=total, invalid=invalid)


def _chunks(iterable: Iterable[LeadInput], size: int) -> Iterator[list[LeadInput]]:
    chunk: list[LeadInput] = []
    for lead in iterable:
        chunk.append(lead)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_resume(*, run: Run, override_budget: bool, now: dt.datetime | None = None) -> int:
    """Requeue the run's ``failed`` (except invalid input, which cannot succeed) and ``queued`` items.

    An explicit resume is what allows a lost call's lead to be sent again (``resend_allowed``).
    ``override_budget`` lets this run go on past today's cap.
    """
    now = now or timezone.now()
    with transaction.atomic():
        queued = RunItem.objects.filter(run=run, status=ItemStatus.QUEUED).update(not_before=None, updated_at=now)
        failed = (
            RunItem.objects.filter(run=run, status=ItemStatus.FAILED)
            .exclude(last_error__startswith="invalid_input")
            .update(status=ItemStatus.QUEUED, attempt=0, not_before=None, lease_until=None,
                    resend_allowed=True, updated_at=now)
        )
        update: dict = {"paused_by_operator": False}
        if override_budget:
            update.update(override_budget=True, soft_paused=False)
        if failed or queued:
            update.update(finished_at=None, report_written_at=None)
        this = Run.objects.filter(run_id=run.run_id)
        this.update(**update)
        # A resume clears the provider waits (the operator fixed the token, topped up); the budget
        # wait stays unless overridden: the next budget day ends it (``guards.budget_unpause``).
        this.filter(reason__in=PROVIDER_WAIT_REASONS).update(reason=None)
        if override_budget:
            this.update(reason=None)
        notify_work()
    runs_refresh([run.run_id], now=now, force=True)
    log.info("run %s resumed: %d failed and %d queued items requeued (override_budget=%s)",
             run.run_id, failed, queued, override_budget)
    return failed + queued


def run_pause(*, run: Run) -> bool:
    """An operator's pause: workers stop taking the run's items; in-flight ones finish. It is its
    own fact (``paused_by_operator``): a budget or provider wait under it is kept."""
    return bool(Run.objects.filter(run_id=run.run_id, finished_at__isnull=True).update(paused_by_operator=True))


def run_status(run: Run, money: dict | None = None) -> dict:
    """A run's status (API, webhooks). Provider calls and requests are counted as everywhere else
    (``selectors.run_money``: call rows, sanitized retries and errors included; distinct requests);
    pass ``money`` when listing many runs (one query for all)."""
    from skiptrace.money.counters import EXACT_RECOUNT_MAX_ITEMS
    from skiptrace.selectors import run_money

    if money is None and (run.total or 0) > EXACT_RECOUNT_MAX_ITEMS and run.counted_at is not None:
        # A big run: its last recount (at most about a second old while it works, exact once it
        # has finished), like the item counters beside it. Counted live on every poll, a dashboard
        # polling a 20,000-call run 80 times a second kept one of two CPUs busy in PostgreSQL.
        money = {"provider_calls": run.counted_calls, "provider_requests": run.counted_requests,
                 "in_flight_cents": run.counted_in_flight_cents}
    if money is None:
        money = run_money([run.run_id])[run.run_id]
    return {
        "run_id": run.run_id,
        "source_label": run.source_label,
        "state": run.state,
        "total": run.total or 0,
        "queued": run.queued or 0,
        "in_flight": run.in_flight or 0,
        "done": run.done or 0,
        "failed": run.failed or 0,
        "cache_hits": run.cache_hits,
        "provider_calls": money["provider_calls"],
        "provider_requests": money["provider_requests"],
        "cost_usd": round(run.cost_cents / 100, 2),
        "in_flight_usd": round(money["in_flight_cents"] / 100, 2),
        "soft_paused": bool(run.soft_paused) and not run.override_budget,
        "override_budget": run.override_budget,
        "reason": run.shown_reason,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "created_at": _iso(run.created_at),
    }


RUN_STATES = tuple(RunState.values)


def _cursor_encode(run: Run) -> str:
    raw = json.dumps([run.created_at.isoformat(), run.run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[dt.datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, run_id = json.loads(raw)
        when = dt.datetime.fromisoformat(created)
        if not isinstance(run_id, str) or when.tzinfo is None:
            raise ValueError
    except (ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API gave out") from None
    return when, run_id


def runs_page(*, limit: int, state: str | None = None, label: str | None = None,
              cursor: str | None = None) -> tuple[list[Run], str | None]:
    """One page of runs, newest first (by ``created_at``, then ``run_id``), and the next page's cursor.

    Keyset pagination: a cursor names the last run of the page before, so pages stay stable while
    new runs arrive. ``label`` matches ``source_label`` exactly."""
    runs = Run.objects.all()
    if state is not None:
        runs = runs.in_state(state)
    if label is not None:
        runs = runs.filter(source_label=label)
    if cursor:
        created, run_id = _cursor_decode(cursor)
        runs = runs.filter(Q(created_at__lt=created) | Q(created_at=created, run_id__lt=run_id))
    page = list(runs.order_by("-created_at", "-run_id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (_cursor_encode(page[-1]) if more and page else None)


def budget_pause_fields(now: dt.datetime) -> dict:
    return budget_refusal(now).fields


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def default_policy() -> Policy:
    return Policy.default()


__all__ = ["AttemptReason", "CreatedRun", "run_create", "run_resume", "run_pause", "run_status"]


# --- one lead now (POST /api/skiptrace) ------------------------------------------------------------


@dataclass
class SingleResult:
    status: int = 200
    body: dict | None = None
    error: str | None = None
    detail: str = ""
    fields: dict | None = None


SINGLE_WAIT_S = 20.0


def lead_skiptrace(
    *, lead: LeadInput, policy: Policy, client=None, clock=timezone.now, sleep=None
) -> SingleResult:
    """Skip-trace one lead now, through the same money path as runs (a one-item run, so the call is
    traceable like any other). Refuses up front, before anything is created, when the answer is not
    cached and the budget is spent (429) or the breaker is open (503)."""
    import time as _time

    from skiptrace import money
    from skiptrace.models import ProviderCall
    from skiptrace.provider import BatchDataClient

    sleep = sleep or _time.sleep
    client = client or BatchDataClient.from_settings()
    now = clock()
    problem = lead.problem or normalize.lead_problem(
        first_name=lead.first_name, last_name=lead.last_name, street=lead.street, city=lead.city,
        state=lead.state, zip=lead.zip,
    )
    if problem:
        return SingleResult(400, error="ValidationError", detail=problem, fields={"fields": {"lead": problem}})
    norm = normalize.normalize_lead(first_name=lead.first_name, last_name=lead.last_name, street=lead.street,
                                    city=lead.city, state=lead.state, zip=lead.zip)
    refusal = admit([norm.signature], policy=policy, now=now, configured=client.configured, synchronous=True).refusal
    if refusal is not None:
        return SingleResult(refusal.status, error=refusal.error, detail=refusal.detail, fields=refusal.fields)
    created = run_create(source_label="api:single", leads=[lead], policy=policy, now=now)
    run = created.run
    deadline = _time.monotonic() + SINGLE_WAIT_S + settings.PROVIDER_TIMEOUT_S
    last = None
    while _time.monotonic() < deadline:
        items = money.items_claim(limit=1, now=clock(), worker_id="api", run_id=run.run_id)
        if items:
            last = money.batch_process(items, client=client, clock=clock, worker_id="api")
        item = RunItem.objects.select_related("provider_call").get(run=run)
        if item.status in (ItemStatus.DONE, ItemStatus.FAILED):
            break
        if last is not None and (last.budget_paused or last.circuit_open):
            break
        release_connection()  # waiting for another request's answer holds no pooled connection
        sleep(0.1)
    item = RunItem.objects.select_related("provider_call").get(run=run)
    if item.status != ItemStatus.DONE:
        return _single_failure(item, run, last, clock())
    contacts = _contacts_of(item)
    call_ids = list(ProviderCall.objects.filter(run_id=run.run_id).order_by("id").values_list("id", flat=True))
    if item.provider_call_id and item.provider_call_id not in call_ids:
        call_ids.append(item.provider_call_id)
    return SingleResult(body={
        "lead_id": item.lead_id, "run_id": run.run_id, "cached": item.cached, "stale": item.stale,
        "payload_hash": item.provider_call.payload_hash if item.provider_call else None,
        "provider_call_ids": call_ids, "matched": contacts.get("matched"),
        "phones": contacts.get("phones", []), "emails": contacts.get("emails", []),
        "persons": contacts.get("persons", []),
    })


def _contacts_of(item: RunItem) -> dict:
    import json

    if item.provider_call and item.provider_call.parsed_contacts_json:
        return json.loads(item.provider_call.parsed_contacts_json)
    return {}


def _single_failure(item: RunItem, run: Run, last, now: dt.datetime) -> SingleResult:
    """Settle a single-lead run that could not be served now, so nothing is left to bill later."""
    from skiptrace.money import runs_refresh

    if item.status == ItemStatus.FAILED:
        status, code = 502, "ProviderError"
        detail, fields = item.last_error or "provider error", {"run_id": run.run_id}
    elif last is not None and last.budget_paused:
        status, code, detail, fields = 429, "BudgetPause", "today's skip-trace budget is spent", budget_pause_fields(now)
    elif last is not None and last.circuit_open:
        status, code, detail = 503, "CircuitOpen", "the provider circuit is open"
        fields = {"retry_after": int(guards.breaker_retry_after(now)) + 1}
    else:
        status, code, detail, fields = 503, "ProviderUnavailable", "the provider did not answer in time", {"retry_after": 30}
    if item.status != ItemStatus.FAILED:
        RunItem.objects.filter(pk=item.pk, status=ItemStatus.QUEUED).update(
            status=ItemStatus.FAILED, last_error=f"{code}: {detail}", updated_at=now
        )
        Run.objects.filter(run_id=run.run_id).update(soft_paused=False)
        runs_refresh([run.run_id], now=now, force=True)
    return SingleResult(status, error=code, detail=detail, fields=fields)
