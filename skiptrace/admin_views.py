"""The ops console's pages beyond Django's stock admin: the live run page, its status JSON and
downloads, the run buttons (pause, resume, the override with its confirmation), and the guard
summary on the admin index. The upload (quote, confirm, a background job) is ``skiptrace.uploads``.

Thin by design (Styleguide): buttons and actions go through ``runs.run_pause`` /
``runs.run_resume``; nothing here talks to the provider — the worker works the runs.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from skiptrace import guards, reports, runs, selectors
from skiptrace.guards import budget as budget_guard
from skiptrace.models import AuditAction, AuditEvent, ItemStatus, Run, RunItem
from skiptrace.states import PROVIDER_WAIT_REASONS, RunState, budget_paused, pausable_q, paused_q, state_q

FAILED_ITEMS_SHOWN = 50
REFRESH_MS = 2000
DOWNLOADS = {"report.json": "report", "enriched.csv": "csv"}

# --- what the buttons and actions accept (run states: ``skiptrace.states``) ----------------------
# Pause what is not finished and not already paused by an operator; resume what has failed items a
# resume would requeue (not ``invalid_input``, which cannot succeed) or is paused (by anyone) before
# finishing.
PAUSABLE_Q = pausable_q()
REQUEUEABLE_FAILURES = Exists(
    RunItem.objects.filter(run=OuterRef("pk"), status=ItemStatus.FAILED).exclude(last_error__startswith="invalid_input")
)
RESUMABLE_Q = Q(REQUEUEABLE_FAILURES) | paused_q()


OVERRIDE_PERMISSION = "skiptrace.override_budget"
ETA_WINDOW_S = 300  # the ETA reads the throughput of the last five minutes


def can_pause(run: Run) -> bool:
    return run.finished_at is None and not run.paused_by_operator


def can_resume(run: Run) -> bool:
    return run.state == RunState.PAUSED or (
        (run.failed or 0) > 0 and Run.objects.filter(pk=run.pk).filter(REQUEUEABLE_FAILURES).exists()
    )


def is_budget_paused(run: Run) -> bool:
    """A budget (the day's cap or the run's own) stops the run: what an override is for."""
    return budget_paused(finished=run.finished_at is not None, soft_paused=run.soft_paused,
                         override_budget=run.override_budget)


def can_override(request: HttpRequest, run: Run) -> bool:
    return is_budget_paused(run) and request.user.has_perm(OVERRIDE_PERMISSION)


def run_buttons(request: HttpRequest, model_admin: admin.ModelAdmin, run: Run) -> dict:
    """Which buttons the run page shows, from the run's state and the user's permissions:

    - Pause: the run is queued or running (not on a run already paused, by anyone);
    - Resume: an operator paused it, a provider wait could be over, or failed items can be requeued
      (not for a budget pause alone: a plain resume leaves it waiting for the budget);
    - Resume past the budget: a budget stops it and the user has ``skiptrace.override_budget``;
      it is the highlighted button then.
    """
    can_change = model_admin.has_change_permission(request, run)
    if not can_change:
        return {"pause": False, "resume": False, "override": False, "highlight": None}
    pause = can_pause(run) and run.state != RunState.PAUSED
    budget_stop = is_budget_paused(run)
    resume = can_resume(run) and (
        not budget_stop or run.paused_by_operator or run.reason in PROVIDER_WAIT_REASONS
        or ((run.failed or 0) > 0 and Run.objects.filter(pk=run.pk).filter(REQUEUEABLE_FAILURES).exists())
    )
    override = can_override(request, run)
    return {"pause": pause, "resume": resume, "override": override,
            "highlight": "override" if override else ("resume" if resume else None)}


# --- the audit trail ----------------------------------------------------------------------------


def audit_run(request: HttpRequest, model_admin: admin.ModelAdmin, run: Run, action: str, detail: str = "") -> None:
    """One audit event (the run page's trail) and the admin's own log entry ("Recent actions")."""
    AuditEvent.record(action, run_id=run.run_id, user=request.user, via="console", detail=detail)
    label = AuditAction(action).label
    model_admin.log_change(request, run, f"{label}{': ' + detail if detail else ''}")


def run_trail(run: Run, limit: int = 50) -> list[AuditEvent]:
    """The run's audit events, newest first, and the cap changes made while it was open."""
    until = run.finished_at or timezone.now()
    events = AuditEvent.objects.filter(
        Q(run_id=run.run_id) | Q(action=AuditAction.CAP_CHANGED, at__gte=run.created_at, at__lte=until)
    ).select_related("actor").order_by("-at", "-id")
    return list(events[:limit])


def remaining_items(run: Run) -> int:
    """Items the run may still send to the provider: queued, in flight, failed ones a resume requeues."""
    return RunItem.objects.filter(run=run).filter(
        Q(status__in=(ItemStatus.QUEUED, ItemStatus.IN_FLIGHT))
        | (Q(status=ItemStatus.FAILED) & ~Q(last_error__startswith="invalid_input"))
    ).count()


def override_estimate(run: Run, now: dt.datetime) -> dict:
    """What a run may still spend past the budget, at worst (every remaining item a paid match),
    next to what today's cap and the run's own cap have left."""
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    remaining = remaining_items(run)
    money = selectors.run_money([run.run_id])[run.run_id]
    caps = budget_guard.budget_caps()
    run_left = budget_guard.run_budget_left_cents(run.run_id, caps)
    return {
        "run": run,
        "remaining_items": remaining,
        "price_usd": price / 100,
        "worst_case_usd": remaining * price / 100,
        "settled_usd": money["settled_cents"] / 100,
        "in_flight_usd": money["in_flight_cents"] / 100,
        "budget_left_usd": budget_guard.budget_left_cents(now) / 100,
        "run_cap_usd": None if caps.run_cents is None else caps.run_cents / 100,
        "run_cap_left_usd": None if run_left is None else run_left / 100,
        "reason": run.reason,
    }


def override_confirm_page(request: HttpRequest, model_admin: admin.ModelAdmin, selected: list[Run], *,
                          from_action: bool) -> HttpResponse:
    now = timezone.now()
    estimates = [override_estimate(run, now) for run in selected]
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Resume past the budget?",
        "estimates": estimates,
        "total_worst_case_usd": sum(e["worst_case_usd"] for e in estimates),
        "budget": selectors.budget_summary(now),
        "from_action": from_action,
        "action_name": "resume_runs_override_budget",
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        "cancel_url": run_url(selected[0]) if len(selected) == 1 and not from_action
        else reverse("admin:skiptrace_run_changelist"),
        "post_url": reverse("admin:skiptrace_run_resume_override", args=[selected[0].run_id])
        if not from_action else reverse("admin:skiptrace_run_changelist"),
    }
    return TemplateResponse(request, "admin/skiptrace/run/override_confirm.html", context)


# --- ETA ------------------------------------------------------------------------------------------


def run_eta(run: Run, now: dt.datetime | None = None) -> dict:
    """Items settled per minute over the last five minutes, and when the rest would be done at that
    pace (None while paused, finished, or before anything settled)."""
    now = now or timezone.now()
    left = (run.queued or 0) + (run.in_flight or 0)
    if run.finished_at is not None or not left:
        return {"per_min": None, "eta_s": None, "eta_at": None}
    recent = RunItem.objects.filter(run=run, status__in=(ItemStatus.DONE, ItemStatus.FAILED),
                                    updated_at__gte=now - dt.timedelta(seconds=ETA_WINDOW_S)).count()
    started = run.started_at or now
    window = max(1.0, min(ETA_WINDOW_S, (now - started).total_seconds()))
    per_s = recent / window
    if per_s <= 0 or run.state == RunState.PAUSED:
        return {"per_min": round(per_s * 60, 1) if per_s else None, "eta_s": None, "eta_at": None}
    eta_s = int(left / per_s) + 1
    return {"per_min": round(per_s * 60, 1), "eta_s": eta_s,
            "eta_at": (now + dt.timedelta(seconds=eta_s)).isoformat().replace("+00:00", "Z")}


def eta_text(eta: dict, state: str) -> str:
    if state == RunState.FINISHED:
        return "finished"
    if state == RunState.PAUSED:
        return "paused: no estimate"
    if eta["eta_s"] is None:
        return "estimating…"
    minutes, seconds = divmod(eta["eta_s"], 60)
    hours, minutes = divmod(minutes, 60)
    span = f"{hours} h {minutes} min" if hours else (f"{minutes} min {seconds} s" if minutes else f"{seconds} s")
    return f"about {span} at {eta['per_min']:g} leads/min"


# --- service calls shared by the changelist actions and the run page buttons ---------------------


@dataclass
class ResumeOutcome:
    resumed: list[Run]
    requeued: int
    budget_blocked: list[Run]


def runs_pause(selected: Iterable[Run]) -> list[Run]:
    """Pause each run (``runs.run_pause``); returns the ones that changed."""
    return [run for run in selected if runs.run_pause(run=run)]


def runs_resume(selected: Iterable[Run], *, override_budget: bool, now: dt.datetime | None = None) -> ResumeOutcome:
    """Resume each run. Without the override, while today's budget is spent, only runs that already
    have an override go on (as the API answers 429 there); the others are reported back."""
    now = now or timezone.now()
    exhausted = not override_budget and guards.budget_exhausted(now)
    outcome = ResumeOutcome([], 0, [])
    for run in selected:
        if exhausted and not run.override_budget:
            outcome.budget_blocked.append(run)
            continue
        was_paused = run.state == RunState.PAUSED
        requeued = runs.run_resume(run=run, override_budget=override_budget, now=now)
        if requeued or was_paused:
            outcome.resumed.append(run)
            outcome.requeued += requeued
    return outcome


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def resume_message(outcome: ResumeOutcome, *, override_budget: bool) -> tuple[str, int]:
    """("Resumed 3 runs", level) plus what was requeued or refused, for ``message_user``."""
    text = f"Resumed {plural(len(outcome.resumed), 'run')}"
    if override_budget:
        text += " past today's budget"
    text += f" ({plural(outcome.requeued, 'item')} requeued)."
    level = messages.SUCCESS if outcome.resumed else messages.WARNING
    if outcome.budget_blocked:
        text += (f" {plural(len(outcome.budget_blocked), 'run')} not resumed: today's budget is spent"
                 " — use “Resume past the budget” to let them go on today.")
        level = messages.WARNING
    return text, level


# --- the CSV upload -------------------------------------------------------------------------------


def run_url(run: Run) -> str:
    return reverse("admin:skiptrace_run_change", args=[quote(run.run_id)])


def progress_parts(run: Run) -> dict:
    """Percentages (of total) of done, failed, in flight and queued, for the bars."""
    total = run.total or 0
    counts = {"done": run.done or 0, "failed": run.failed or 0, "in_flight": run.in_flight or 0, "queued": run.queued or 0}
    pct = {k: (round(100.0 * v / total, 1) if total else 0.0) for k, v in counts.items()}
    settled = counts["done"] + counts["failed"]
    return {"counts": counts, "pct": pct, "settled": settled, "total": total,
            "settled_pct": round(100.0 * settled / total) if total else 100}


def cache_hit_ratio(run: Run) -> float | None:
    """The contract's ratio: cached hits / (cached hits + items served by a provider call)."""
    served = (run.cache_hits or 0) + (run.provider_served or 0)
    return (run.cache_hits or 0) / served if served else None


def status_payload(run: Run) -> dict:
    """The run page's live JSON: ``/status`` plus progress, money (one definition of provider
    calls: ``selectors.run_money``), today's budget, the ETA and which buttons apply."""
    ratio = cache_hit_ratio(run)
    now = timezone.now()
    spend = selectors.run_spend(run)
    budget = selectors.budget_summary(now)
    eta = run_eta(run, now)
    return {
        **runs.run_status(run),
        "provider_calls": spend["provider_calls"],
        "provider_requests": spend["provider_requests"],
        "settled_usd": spend["settled_usd"],
        "in_flight_usd": spend["in_flight_usd"],
        "cost_per_match_usd": spend["cost_per_match_usd"],
        "matched_leads": spend["matched_leads"],
        "run_cap_left_usd": spend["run_cap_left_usd"],
        "progress": progress_parts(run),
        "cache_hit_ratio": None if ratio is None else round(ratio, 4),
        "artifacts_ready": artifacts_ready(run),
        "budget_spent_usd": round(budget["spent_usd"], 2),
        "budget_settled_usd": round(budget["settled_usd"], 2),
        "budget_in_flight_usd": round(budget["in_flight_usd"], 2),
        "budget_cap_usd": round(budget["cap_usd"], 2),
        "eta": eta,
        "eta_text": eta_text(eta, run.state),
        "budget_paused": is_budget_paused(run),
    }


def artifacts_ready(run: Run) -> bool:
    return run.finished_at is not None and all(p.exists() for p in reports.artifact_paths(run.run_id))


def _report_of(run: Run) -> dict:
    """The finished run's report.json as written (cheap); else the live report."""
    report_path, _ = reports.artifact_paths(run.run_id)
    if run.finished_at is not None and report_path.exists():
        try:
            return json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return reports.run_report(run)


def run_page_context(request: HttpRequest, model_admin: admin.ModelAdmin, run: Run) -> dict:
    report = _report_of(run)
    failed_items = list(
        RunItem.objects.filter(run=run, status=ItemStatus.FAILED)
        .order_by("position", "id")
        .values("lead_id", "last_error", "attempt", "provider_call_id", "position")[:FAILED_ITEMS_SHOWN]
    )
    for item in failed_items:
        item["lead_url"] = reverse("admin:contacts_lead_change", args=[quote(item["lead_id"])])
    working = run.state in ("queued", "running") or (run.in_flight or 0) > 0
    ratio = cache_hit_ratio(run)
    now = timezone.now()
    buttons = run_buttons(request, model_admin, run)
    eta = run_eta(run, now)
    return {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"Run {run.run_id}",
        "subtitle": run.source_label,
        "original": run,
        "run": run,
        "status": runs.run_status(run),
        "progress": progress_parts(run),
        "cache_hit_ratio": ratio,
        "report": report,
        "errors": report.get("errors") or [],
        "failed_items": failed_items,
        "failed_more": max(0, (run.failed or 0) - len(failed_items)),
        "artifacts_ready": artifacts_ready(run),
        "working": working,
        # the page follows every unfinished run, paused ones too (a budget or provider wait ends by itself)
        "live": run.finished_at is None or working,
        "refresh_ms": REFRESH_MS,
        "refresh_s": REFRESH_MS // 1000,
        "status_url": reverse("admin:skiptrace_run_status", args=[run.run_id]),
        "report_url": reverse("admin:skiptrace_run_download", args=[run.run_id, "report.json"]),
        "csv_url": reverse("admin:skiptrace_run_download", args=[run.run_id, "enriched.csv"]),
        "pause_url": reverse("admin:skiptrace_run_pause", args=[run.run_id]),
        "resume_url": reverse("admin:skiptrace_run_resume", args=[run.run_id]),
        "override_url": reverse("admin:skiptrace_run_resume_override", args=[run.run_id]),
        "calls_url": reverse("admin:skiptrace_providercall_changelist") + "?" + urlencode({"run_id": run.run_id}),
        "leads_url": reverse("admin:contacts_lead_changelist") + "?" + urlencode({"run": run.run_id}),
        "can_pause": buttons["pause"],
        "can_resume": buttons["resume"],
        "can_override": buttons["override"],
        "highlight": buttons["highlight"],
        "budget_paused": is_budget_paused(run),
        "budget": budget_summary(now),
        "spend": selectors.run_spend(run),
        "eta": eta,
        "eta_text": eta_text(eta, run.state),
        "trail": run_trail(run),
        "can_view_contacts": request.user.has_perm("contacts.view_lead"),
    }


def run_page(request: HttpRequest, model_admin: admin.ModelAdmin, run_id: str) -> HttpResponse:
    run = get_object_or_404(Run, run_id=run_id)
    if not model_admin.has_view_permission(request, run):
        raise PermissionDenied
    return TemplateResponse(request, "admin/skiptrace/run/detail.html", run_page_context(request, model_admin, run))


def run_status_json(request: HttpRequest, model_admin: admin.ModelAdmin, run_id: str) -> JsonResponse:
    run = get_object_or_404(Run, run_id=run_id)
    if not model_admin.has_view_permission(request, run):
        raise PermissionDenied
    return JsonResponse(status_payload(run))


def run_download(request: HttpRequest, model_admin: admin.ModelAdmin, run_id: str, name: str) -> HttpResponse:
    """``report.json`` / ``enriched.csv`` of a finished run, behind the admin login (no signed link
    to expire on a page left open). A finished run whose files are missing gets them written now."""
    run = get_object_or_404(Run, run_id=run_id)
    # Both files carry leads' phones and emails (the report's samples, the CSV's every row): viewing
    # a run is not enough, the contacts' own view permission is needed too.
    if not (model_admin.has_view_permission(request, run) and request.user.has_perm("contacts.view_lead")):
        raise PermissionDenied
    if name not in DOWNLOADS:
        raise Http404("no such file")
    if run.finished_at is None:
        raise Http404("the run's files are written when it finishes")
    report_path, csv_path = reports.artifact_paths(run.run_id)
    if not (report_path.exists() and csv_path.exists()):
        report_path, csv_path = reports.write_run_artifacts(run)
    else:
        reports.refresh_artifacts_if_stale(run)  # a number whose DNC status went stale leaves Phone1..3
    path = report_path if name == "report.json" else csv_path
    content_type = "application/json" if name == "report.json" else "text/csv; charset=utf-8"
    response = FileResponse(path.open("rb"), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{run.run_id}-{name}"'
    return response


@require_POST
def run_button(request: HttpRequest, model_admin: admin.ModelAdmin, run_id: str, action: str) -> HttpResponse:
    """The run page's Pause / Resume / Resume past the budget buttons (POST, CSRF-checked). Each
    change is audited; the override needs ``skiptrace.override_budget`` and a confirmation (the
    first POST answers with the confirmation page and its estimate; ``confirm=yes`` does it)."""
    run = get_object_or_404(Run, run_id=run_id)
    if not model_admin.has_change_permission(request, run):
        raise PermissionDenied
    if action == "pause":
        if can_pause(run) and runs_pause([run]):
            audit_run(request, model_admin, run, AuditAction.RUN_PAUSED)
            model_admin.message_user(request, "Paused 1 run. Items in flight finish; nothing new is sent.",
                                     messages.SUCCESS)
        else:
            model_admin.message_user(request, "Not paused: the run is finished or already paused.", messages.WARNING)
        return HttpResponseRedirect(run_url(run))
    override = action == "resume_override"
    if not can_resume(run):
        model_admin.message_user(request, "Nothing to resume: no failed items to requeue and the run is not paused.",
                                 messages.WARNING)
        return HttpResponseRedirect(run_url(run))
    if override:
        if not request.user.has_perm(OVERRIDE_PERMISSION):
            raise PermissionDenied
        if request.POST.get("confirm") != "yes":
            return override_confirm_page(request, model_admin, [run], from_action=False)
    estimate = override_estimate(run, timezone.now()) if override else None
    outcome = runs_resume([run], override_budget=override)
    for resumed in outcome.resumed:
        if override:
            audit_run(request, model_admin, resumed, AuditAction.BUDGET_OVERRIDE, override_detail(estimate))
        else:
            audit_run(request, model_admin, resumed, AuditAction.RUN_RESUMED, f"{plural(outcome.requeued, 'item')} requeued")
    text, level = resume_message(outcome, override_budget=override)
    model_admin.message_user(request, text, level)
    return HttpResponseRedirect(run_url(run))


def override_detail(estimate: dict | None) -> str:
    if not estimate:
        return ""
    text = (f"{plural(estimate['remaining_items'], 'item')} left, worst case ${estimate['worst_case_usd']:,.2f}; "
            f"today's budget left ${estimate['budget_left_usd']:,.2f}")
    if estimate["run_cap_left_usd"] is not None:
        text += f"; run cap left ${estimate['run_cap_left_usd']:,.2f}"
    if estimate["reason"]:
        text += f"; was waiting for {estimate['reason']}"
    return text


# --- the admin index: spend against the cap, breaker state -----------------------------------------


def budget_summary(now: dt.datetime) -> dict:
    return selectors.budget_summary(now)


def ops_summary(now: dt.datetime | None = None) -> dict:
    return {
        **selectors.guard_summary(now or timezone.now()),
        "runs_url": reverse("admin:skiptrace_run_changelist"),
        "upload_url": reverse("admin:skiptrace_run_upload"),
    }


def ops_index(request: HttpRequest) -> HttpResponse:
    """The admin index with the guard summary on top (wired in ``convexa.urls`` before the admin)."""
    return admin.site.index(request, extra_context={"ops": ops_summary()})


def runs_by_state(queryset: QuerySet[Run], state: str) -> QuerySet[Run]:
    return queryset.filter(state_q(state))
