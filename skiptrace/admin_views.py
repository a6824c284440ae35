"""The ops console's pages beyond Django's stock admin: the CSV upload, the live run page, its
status JSON and downloads, the run buttons, and the guard summary on the admin index.

Thin by design (Styleguide): uploads go through ``runs.run_create`` with ``intake.iter_csv_leads``
(the CLI's path), buttons and actions through ``runs.run_pause`` / ``runs.run_resume``; nothing
here talks to the provider — the worker works the runs it creates.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.contrib import admin, messages
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

from skiptrace import admission, guards, reports, runs, selectors
from skiptrace.intake import IntakeError, LeadInput, iter_csv_leads
from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.money import Policy
from skiptrace.states import RunState, pausable_q, paused_q, state_q

INTAKE_ROWS_SHOWN = 25  # failed rows listed after an upload; the run page lists the rest
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


def can_pause(run: Run) -> bool:
    return run.finished_at is None and not run.paused_by_operator


def can_resume(run: Run) -> bool:
    return run.state == RunState.PAUSED or (
        (run.failed or 0) > 0 and Run.objects.filter(pk=run.pk).filter(REQUEUEABLE_FAILURES).exists()
    )


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


class RunUploadForm(forms.Form):
    file = forms.FileField(label="Lead list (CSV)", help_text="UTF-8 (with or without BOM) or Windows-1252; "
                           "a header row with at least a street column (Address, Property Address, …). "
                           "Up to 100,000 rows. Queuing takes about a minute per 50,000 rows; the page waits "
                           "until the run exists.")
    label = forms.CharField(label="Source label", max_length=200, required=False,
                            help_text="Shown on the run and in the report; defaults to the file name.")
    force = forms.BooleanField(required=False, help_text="Re-fetch leads even when the cache has them (costs money).")
    fallback = forms.BooleanField(required=False,
                                  help_text="When the provider is down, serve expired cache entries (marked stale).")
    retry_sanitized = forms.BooleanField(required=False, label="Sanitized retry",
                                         help_text="One retry without the unit when a unit address finds nothing.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["retry_sanitized"].initial = settings.SANITIZED_RETRY_ENABLED

    def policy(self) -> Policy:
        data = self.cleaned_data
        return Policy(force=data["force"], fallback=data["fallback"], retry_sanitized=data["retry_sanitized"])


class _RowNumbers:
    """Passes leads through while remembering each one's file row number, by position."""

    def __init__(self, leads: Iterable[LeadInput]) -> None:
        self._leads = leads
        self.numbers = array("l")

    def __iter__(self) -> Iterator[LeadInput]:
        for lead in self._leads:
            self.numbers.append(lead.row_number or 0)
            yield lead


@dataclass
class UploadResult:
    created: runs.CreatedRun
    refused: list[tuple[int, str, str]]  # (row number, lead id, last_error) of the first rows refused


def run_upload(*, upload, label: str | None, policy: Policy) -> UploadResult:
    """Create a run from an uploaded CSV exactly as the CLI does. IntakeError = nothing created
    (also for a header without rows: an empty run is never what an upload meant)."""
    leads = iter_csv_leads(upload)
    first = next(leads, None)
    if first is None:
        raise IntakeError("the file has a header but no data rows")
    rows = _RowNumbers(itertools.chain([first], leads))
    created = runs.run_create(source_label=label, leads=rows, policy=policy)
    refused = []
    if created.invalid:
        failed = (
            RunItem.objects.filter(run=created.run, status=ItemStatus.FAILED, last_error__startswith="invalid_input")
            .order_by("position")
            .values_list("position", "lead_id", "last_error")[:INTAKE_ROWS_SHOWN]
        )
        for position, lead_id, last_error in failed:
            row = rows.numbers[position] if position < len(rows.numbers) else position + 1
            refused.append((row, lead_id, last_error or ""))
    return UploadResult(created, refused)


def upload_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> HttpResponse:
    if not model_admin.has_add_permission(request):
        raise PermissionDenied
    form = RunUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        label = form.cleaned_data["label"].strip() or upload.name
        now = timezone.now()
        try:
            result = run_upload(upload=upload, label=label, policy=form.policy())
        except IntakeError as exc:
            form.add_error("file", f"{exc} — nothing was created.")
        else:
            decision = admission.admit(admission.run_signatures(result.created.run), policy=form.policy(), now=now)
            _upload_messages(request, model_admin, result, refusal=decision.refusal)
            return HttpResponseRedirect(run_url(result.created.run))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Upload a lead list",
        "form": form,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, "admin/skiptrace/run/upload.html", context)


def _upload_messages(request: HttpRequest, model_admin: admin.ModelAdmin, result: UploadResult, *,
                     refusal: admission.Refusal | None) -> None:
    created = result.created
    model_admin.message_user(
        request,
        f"Created run {created.run.run_id} from “{created.run.source_label}”: {plural(created.total, 'lead')}, "
        f"{created.invalid} refused at intake. The worker works it; this page follows it.",
        messages.SUCCESS,
    )
    for row, lead_id, error in result.refused:
        model_admin.message_user(request, f"Row {row} (lead {lead_id}): {error}", messages.WARNING)
    if created.invalid > len(result.refused):
        model_admin.message_user(
            request, f"… and {created.invalid - len(result.refused)} more refused rows (listed below).", messages.WARNING
        )
    if refusal is not None:  # the operator's run is kept: it waits (see ``skiptrace.admission``)
        model_admin.message_user(request, admission.operator_warning(refusal), messages.WARNING)


# --- the run page ----------------------------------------------------------------------------------


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
    ratio = cache_hit_ratio(run)
    return {
        **runs.run_status(run),
        "progress": progress_parts(run),
        "cache_hit_ratio": None if ratio is None else round(ratio, 4),
        "artifacts_ready": artifacts_ready(run),
        "budget_spent_usd": round(guards.budget_spent_cents_today() / 100, 2),
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
    can_change = model_admin.has_change_permission(request, run)
    working = run.state in ("queued", "running") or (run.in_flight or 0) > 0
    ratio = cache_hit_ratio(run)
    now = timezone.now()
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
        "can_pause": can_change and can_pause(run),
        "can_resume": can_change and can_resume(run),
        "budget": budget_summary(now),
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
    """The run page's Pause / Resume / Resume past the budget buttons (POST, CSRF-checked)."""
    run = get_object_or_404(Run, run_id=run_id)
    if not model_admin.has_change_permission(request, run):
        raise PermissionDenied
    if action == "pause":
        if can_pause(run) and runs_pause([run]):
            model_admin.message_user(request, "Paused 1 run. Items in flight finish; nothing new is sent.",
                                     messages.SUCCESS)
        else:
            model_admin.message_user(request, "Not paused: the run is finished or already paused.", messages.WARNING)
    else:
        override = action == "resume_override"
        if not can_resume(run):
            model_admin.message_user(request, "Nothing to resume: no failed items to requeue and the run is not paused.",
                                     messages.WARNING)
        else:
            text, level = resume_message(runs_resume([run], override_budget=override), override_budget=override)
            model_admin.message_user(request, text, level)
    return HttpResponseRedirect(run_url(run))


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
