"""The ops console for runs (upload, live page, pause / resume) and the read-only audit tables
(provider calls, cache entries). Pages beyond the stock admin live in ``skiptrace.admin_views``."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from functools import update_wrapper
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce, Now
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from skiptrace import admin_views as console
from skiptrace import selectors
from skiptrace.guards import budget as budget_guard
from skiptrace.models import AuditAction, AuditEvent, BudgetSetting, CacheEntry, ProviderCall, Run, RunItem
from skiptrace.provider import sanitize_for_debug
from skiptrace.states import RunState
from skiptrace.uploads import upload_urls

STATE_COLORS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "paused": "#d97706",
    "finished": "#15803d",
    # provider call states
    "reserved": "#6b7280",
    "sent": "#2563eb",
    "completed": "#15803d",
    "errored": "#b91c1c",
    "lost": "#7c2d12",
}
BAR_COLORS = {"done": "#16a34a", "failed": "#dc2626", "in_flight": "#3b82f6", "queued": "#d1d5db"}


def badge(text: str, color: str) -> str:
    return format_html(
        '<span class="ops-badge" style="display:inline-block;padding:1px 7px;border-radius:9px;'
        'background:{};color:#fff;font-size:11px;font-weight:600;white-space:nowrap">{}</span>',
        color, text,
    )


def link(url: str, text: Any) -> str:
    return format_html('<a href="{}">{}</a>', url, text)


def run_link(run_id: str | None) -> str:
    if not run_id:
        return "—"
    return link(reverse("admin:skiptrace_run_change", args=[quote(run_id)]), run_id)


def lead_link(lead_id: str | None) -> str:
    if not lead_id:
        return "—"
    return link(reverse("admin:contacts_lead_change", args=[quote(lead_id)]), lead_id)


def call_link(call_id: int | None) -> str:
    if call_id is None:
        return "—"
    return link(reverse("admin:skiptrace_providercall_change", args=[call_id]), f"call {call_id}")


def when(value) -> str:
    """A local timestamp for list columns, to the second ("2026-11-28 14:02:09")."""
    return date_format(timezone.localtime(value), "Y-m-d H:i:s") if value else "—"


def usd(cents: int | None) -> str:
    return f"${(cents or 0) / 100:,.2f}"


def pretty_sanitized(raw: str | None) -> str:
    """Stored JSON, sanitized (no full phone, email or token) and indented, in a <pre>."""
    if not raw:
        return "—"
    try:
        text = json.dumps(sanitize_for_debug(json.loads(raw)), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        text = sanitize_for_debug(raw)
    return format_html('<pre class="ops-json" style="white-space:pre-wrap;max-height:480px;overflow:auto;'
                       'margin:0;font-size:12px">{}</pre>', text)


def progress_bar(run: Run) -> str:
    parts = console.progress_parts(run)
    segments = format_html_join(
        "", '<span title="{} {}" style="display:inline-block;height:100%;width:{}%;background:{}"></span>',
        ((k, parts["counts"][k], parts["pct"][k], BAR_COLORS[k]) for k in ("done", "failed", "in_flight", "queued")
         if parts["counts"][k]),
    )
    c = parts["counts"]
    return format_html(
        '<div class="ops-progress" style="width:160px;height:10px;border-radius:5px;overflow:hidden;'
        'background:#e5e7eb;display:flex">{}</div>'
        '<div style="font-size:11px;white-space:nowrap">{} done · {} failed · {} queued of {}</div>',
        segments, c["done"], c["failed"], c["queued"] + c["in_flight"], parts["total"],
    )


def creator_text(run: Run) -> str:
    user = run.created_by.get_username() if run.created_by_id and run.created_by else ""
    via = run.created_via or ""
    if user and via and via != "console":
        return f"{user} ({via})"
    return user or via or "—"


class AdminPage:
    """Mixin: wrap a ``skiptrace.admin_views`` function ``fn(request, model_admin, ...)`` as an
    admin view (login, staff, CSRF, never cached)."""

    def console_view(self, fn: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return fn(request, self, *args, **kwargs)

        return self.admin_site.admin_view(update_wrapper(view, fn))  # type: ignore[attr-defined]


# --- runs ------------------------------------------------------------------------------------------


class RunStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [(s.value, s.label) for s in RunState]

    def queryset(self, request, queryset):
        if self.value() in RunState.values:
            return console.runs_by_state(queryset, self.value())
        return queryset


@admin.register(Run)
class RunAdmin(AdminPage, admin.ModelAdmin):
    # fits 1,400 px (templates/admin/skiptrace/list_fit.html): the label under the id, started and
    # finished in one column, settled and in-flight spend on two lines
    list_display = ("run_title", "state_badge", "progress", "hit_ratio", "calls", "spend", "times", "creator")
    list_display_links = ("run_title",)
    list_filter = (RunStateFilter, "override_budget")
    search_fields = ("=run_id", "source_label")
    actions = ("pause_runs", "resume_runs", "resume_runs_override_budget")
    list_per_page = 50
    list_select_related = ("created_by",)

    def has_override_permission(self, request: HttpRequest) -> bool:
        """Going past the budget: ``skiptrace.override_budget`` on top of changing runs."""
        return self.has_change_permission(request) and request.user.has_perm(console.OVERRIDE_PERMISSION)

    @staticmethod
    def _money_of(run: Run) -> dict:
        if hasattr(run, "m_provider_calls"):  # the list's annotations (``selectors.run_money_annotations``)
            return {k: getattr(run, f"m_{k}") for k in ("provider_calls", "provider_requests", "settled_cents",
                                                         "in_flight_cents")}
        return selectors.run_money([run.run_id])[run.run_id]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        # Items refused at intake (invalid_input) cannot be resumed; the list shows them apart.
        refused = (
            RunItem.objects.filter(run=OuterRef("pk"), status="failed", last_error__startswith="invalid_input")
            .values("run").annotate(n=Count("id")).values("n")
        )
        return super().get_queryset(request).annotate(
            refused=Coalesce(Subquery(refused, output_field=IntegerField()), 0),
            **selectors.run_money_annotations(),
        )

    def has_delete_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        return False  # runs are the audit trail of what was spent

    # -- columns --

    @admin.display(description="Run", ordering="run_id")
    def run_title(self, run: Run) -> str:
        return format_html('{}<div class="ops-quiet" style="font-weight:normal">{}</div>', run.run_id,
                           run.source_label or "")

    @admin.display(description="State")
    def state_badge(self, run: Run) -> str:
        state = run.state
        # the operator's pause and what the run waits for are separate facts: both are shown
        reasons = [r for r in dict.fromkeys((run.shown_reason, run.reason)) if r]
        text = state if state != RunState.PAUSED or not reasons else f"paused: {', '.join(reasons)}"
        return badge(text, STATE_COLORS[state])

    @admin.display(description="Progress")
    def progress(self, run: Run) -> str:
        bar = progress_bar(run)
        if getattr(run, "refused", 0):
            return format_html('{}<div style="font-size:11px;color:#b45309">{} refused at intake</div>',
                               bar, run.refused)
        return bar

    @admin.display(description="Cache hit ratio", ordering="cache_hits")
    def hit_ratio(self, run: Run) -> str:
        ratio = console.cache_hit_ratio(run)
        return "—" if ratio is None else f"{ratio:.0%}"

    @admin.display(description="Provider calls")
    def calls(self, run: Run) -> str:
        money = self._money_of(run)
        return format_html('{}<div class="ops-quiet">{} requests</div>', money["provider_calls"],
                           money["provider_requests"])

    @admin.display(description="Spend", ordering="cost_cents")
    def spend(self, run: Run) -> str:
        # settled: the run's recounted cost (``runs_refresh``: the sum of its calls' cost); in flight:
        # the worst case of its open calls, apart
        money = self._money_of(run)
        if money["in_flight_cents"]:
            return format_html('{} settled<div class="ops-quiet">+ {} in flight (worst case)</div>',
                               usd(run.cost_cents), usd(money["in_flight_cents"]))
        return format_html("{} settled", usd(run.cost_cents))

    @admin.display(description="Started / finished", ordering="started_at")
    def times(self, run: Run) -> str:
        return format_html('{}<div class="ops-quiet">{}</div>', when(run.started_at), when(run.finished_at))

    @admin.display(description="Created by")
    def creator(self, run: Run) -> str:
        return creator_text(run)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        return super().changelist_view(request, {"title": "Runs", **(extra_context or {})})

    # -- actions: filter by eligible state, call the service, say what happened --

    @admin.action(description="Pause selected runs", permissions=["change"])
    def pause_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        eligible = list(queryset.filter(console.PAUSABLE_Q))
        paused = console.runs_pause(eligible)
        for run in paused:
            console.audit_run(request, self, run, AuditAction.RUN_PAUSED)
        skipped = queryset.count() - len(eligible)
        text = f"Paused {console.plural(len(paused), 'run')}."
        if skipped:
            text += f" {console.plural(skipped, 'run')} skipped: finished or already paused."
        self.message_user(request, text, messages.SUCCESS if paused else messages.WARNING)

    def _resume(self, request: HttpRequest, queryset: QuerySet[Run], *, override_budget: bool) -> None:
        eligible = list(queryset.filter(console.RESUMABLE_Q))
        now = timezone.now()
        estimates = {r.run_id: console.override_estimate(r, now) for r in eligible} if override_budget else {}
        outcome = console.runs_resume(eligible, override_budget=override_budget, now=now)
        for run in outcome.resumed:
            if override_budget:
                console.audit_run(request, self, run, AuditAction.BUDGET_OVERRIDE,
                                  console.override_detail(estimates.get(run.run_id)))
            else:
                console.audit_run(request, self, run, AuditAction.RUN_RESUMED)
        text, level = console.resume_message(outcome, override_budget=override_budget)
        skipped = queryset.count() - len(eligible)
        if skipped:
            text += f" {console.plural(skipped, 'run')} skipped: nothing to requeue and not paused."
        self.message_user(request, text, level)

    @admin.action(description="Resume selected runs (requeue failed items)", permissions=["change"])
    def resume_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._resume(request, queryset, override_budget=False)

    @admin.action(description="Resume selected runs past the budget (override, asks to confirm)",
                  permissions=["override"])
    def resume_runs_override_budget(self, request: HttpRequest, queryset: QuerySet[Run]):
        if request.POST.get("confirm") != "yes":
            eligible = list(queryset.filter(console.RESUMABLE_Q))
            if not eligible:
                self.message_user(request, "Resumed 0 runs: nothing to requeue and not paused.", messages.WARNING)
                return None
            return console.override_confirm_page(request, self, eligible, from_action=True)
        self._resume(request, queryset, override_budget=True)
        return None

    # -- pages --

    def get_urls(self):
        return [
            *upload_urls(self),  # upload, quote, confirm/cancel, job page, job status JSON (before <run_id>/)
            path("<str:run_id>/status/", self.console_view(console.run_status_json), name="skiptrace_run_status"),
            path("<str:run_id>/download/<str:name>", self.console_view(console.run_download),
                 name="skiptrace_run_download"),
            path("<str:run_id>/pause/", self.console_view(console.run_button), {"action": "pause"},
                 name="skiptrace_run_pause"),
            path("<str:run_id>/resume/", self.console_view(console.run_button), {"action": "resume"},
                 name="skiptrace_run_resume"),
            path("<str:run_id>/resume-override/", self.console_view(console.run_button),
                 {"action": "resume_override"}, name="skiptrace_run_resume_override"),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:skiptrace_run_upload"))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        from django.contrib.admin.utils import unquote

        return console.run_page(request, self, unquote(object_id))


# --- the audit tables: read-only -------------------------------------------------------------------


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


CALL_BIG_FIELDS = ("request_json", "response_json", "parsed_contacts_json")


@admin.register(ProviderCall)
class ProviderCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "run", "lead", "state_badge", "status_code", "cost", "label_shown",
                    "attempt_reason", "match_count", "served")
    list_filter = ("state", "attempt_reason", "label", ("budget_day", admin.DateFieldListFilter), "status_code",
                   "provider")
    search_fields = ("=lead_id", "=run_id", "=batch_id", "=provider_request_id", "=payload_hash")
    list_per_page = 50
    fieldsets = (
        ("Call", {"fields": ("id", "provider", "state_badge", "status_code", "cost", "estimate", "budget_day",
                             "label_shown", "attempt_reason", "matched", "match_count", "error")}),
        ("Belongs to", {"fields": ("run", "lead", "batch_id", "predecessor_link", "served_items", "cache_entry")}),
        ("Identity", {"fields": ("idempotency_key", "signature", "generation", "payload_hash",
                                 "provider_request_id")}),
        ("Timing", {"fields": ("created_at", "sent_at", "finished_at", "lease_until")}),
        ("Sanitized request and response", {"fields": ("request", "response", "contacts")}),
    )
    readonly_fields = tuple(f for _, spec in fieldsets for f in spec["fields"])

    def get_queryset(self, request: HttpRequest) -> QuerySet[ProviderCall]:
        served = (
            RunItem.objects.filter(provider_call=OuterRef("pk")).values("provider_call")
            .annotate(n=Count("id")).values("n")
        )
        return (
            super().get_queryset(request)
            .defer(*CALL_BIG_FIELDS)
            .annotate(served_count=Coalesce(Subquery(served, output_field=IntegerField()), 0))
        )

    @admin.display(description="Run", ordering="run_id")
    def run(self, call: ProviderCall) -> str:
        return run_link(call.run_id)

    @admin.display(description="Lead", ordering="lead_id")
    def lead(self, call: ProviderCall) -> str:
        return lead_link(call.lead_id)

    @admin.display(description="State", ordering="state")
    def state_badge(self, call: ProviderCall) -> str:
        return badge(call.state, STATE_COLORS.get(call.state, "#6b7280"))

    @admin.display(description="Cost", ordering="cost_cents")
    def cost(self, call: ProviderCall) -> str:
        return usd(call.cost_cents)

    @admin.display(description="Estimate")
    def estimate(self, call: ProviderCall) -> str:
        return usd(call.estimate_cents)

    @admin.display(description="Label", ordering="label")
    def label_shown(self, call: ProviderCall) -> str:
        return call.label or "—"

    @admin.display(description="Items served", ordering="served_count")
    def served(self, call: ProviderCall) -> int:
        return call.served_count

    @admin.display(description="Error (sanitized)")
    def error(self, call: ProviderCall) -> str:
        return sanitize_for_debug(call.error_text) if call.error_text else "—"

    @admin.display(description="Predecessor")
    def predecessor_link(self, call: ProviderCall) -> str:
        return call_link(call.predecessor_id)

    @admin.display(description="Run items served by this call")
    def served_items(self, call: ProviderCall) -> str:
        rows = list(RunItem.objects.filter(provider_call=call).order_by("-id").values_list("run_id", "lead_id")[:20])
        if not rows:
            return "—"
        return format_html_join(
            "", "<div>{} → {}</div>", ((run_link(run_id), lead_link(lead_id)) for run_id, lead_id in rows)
        )

    @admin.display(description="Cache entry")
    def cache_entry(self, call: ProviderCall) -> str:
        entry = CacheEntry.objects.filter(provider_call=call).values_list("pk", flat=True).first()
        if entry is None:
            return "—"
        return link(reverse("admin:skiptrace_cacheentry_change", args=[entry]), f"cache entry {entry}")

    @admin.display(description="Request")
    def request(self, call: ProviderCall) -> str:
        return pretty_sanitized(call.request_json)

    @admin.display(description="Response")
    def response(self, call: ProviderCall) -> str:
        return pretty_sanitized(call.response_json)

    @admin.display(description="Parsed contacts")
    def contacts(self, call: ProviderCall) -> str:
        return pretty_sanitized(call.parsed_contacts_json)


class FreshnessFilter(admin.SimpleListFilter):
    title = "freshness"
    parameter_name = "fresh"

    def lookups(self, request, model_admin):
        return [("yes", "Fresh (within TTL)"), ("no", "Expired")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(ttl_expires_at__gt=Now())
        if self.value() == "no":
            return queryset.filter(ttl_expires_at__lte=Now())
        return queryset


@admin.register(CacheEntry)
class CacheEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "short_signature", "run", "lead", "call", "freshness", "created_at", "ttl_expires_at",
                    "last_seen")
    list_filter = (FreshnessFilter, "provider")
    list_select_related = ("provider_call",)
    search_fields = ("=signature", "=idempotency_key", "=payload_hash", "=provider_call__lead_id",
                     "=provider_call__run_id")
    list_per_page = 50
    fieldsets = (
        ("Entry", {"fields": ("id", "provider", "freshness", "created_at", "ttl_expires_at", "last_seen")}),
        ("Belongs to", {"fields": ("call", "run", "lead")}),
        ("Identity", {"fields": ("signature", "idempotency_key", "payload_hash")}),
        ("Sanitized answer", {"fields": ("response", "contacts")}),
    )
    readonly_fields = tuple(f for _, spec in fieldsets for f in spec["fields"])

    def get_queryset(self, request: HttpRequest) -> QuerySet[CacheEntry]:
        return (
            super().get_queryset(request)
            .select_related("provider_call")
            .defer("response_json", "parsed_contacts_json", *(f"provider_call__{f}" for f in CALL_BIG_FIELDS))
            .annotate(is_fresh=ExpressionWrapper(Q(ttl_expires_at__gt=Now()), output_field=BooleanField()))
        )

    @admin.display(description="Signature")
    def short_signature(self, entry: CacheEntry) -> str:
        return f"{entry.signature[:12]}…"

    @admin.display(description="Run")
    def run(self, entry: CacheEntry) -> str:
        return run_link(entry.provider_call.run_id if entry.provider_call else None)

    @admin.display(description="Lead")
    def lead(self, entry: CacheEntry) -> str:
        return lead_link(entry.provider_call.lead_id if entry.provider_call else None)

    @admin.display(description="Provider call", ordering="provider_call")
    def call(self, entry: CacheEntry) -> str:
        return call_link(entry.provider_call_id)

    @admin.display(description="Freshness", ordering="is_fresh")
    def freshness(self, entry: CacheEntry) -> str:
        return badge("fresh", "#15803d") if entry.is_fresh else badge("expired", "#9ca3af")

    @admin.display(description="Response")
    def response(self, entry: CacheEntry) -> str:
        return pretty_sanitized(entry.response_json)

    @admin.display(description="Parsed contacts")
    def contacts(self, entry: CacheEntry) -> str:
        return pretty_sanitized(entry.parsed_contacts_json)


# --- the budget caps and the audit trail -------------------------------------------------------------


def _cents(value: Decimal | None) -> int | None:
    return None if value is None else int((value * 100).to_integral_value())


class BudgetSettingForm(forms.ModelForm):
    """The caps in dollars (stored in cents)."""

    daily_cap_usd = forms.DecimalField(
        label="Daily cap (USD)", min_value=Decimal("0"), max_value=Decimal("1000000"), decimal_places=2,
        help_text="The most all runs together may spend per budget day (settled cost plus the worst case "
                  "of calls in flight). Every worker reads it before each reservation.")
    run_cap_usd = forms.DecimalField(
        label="Per-run cap (USD)", required=False, min_value=Decimal("0"), max_value=Decimal("1000000"),
        decimal_places=2,
        help_text="The most one run may spend in all; a run that reaches it waits (reason run_budget) until "
                  "the cap is raised or removed, or an override. Empty: no per-run cap.")

    class Meta:
        model = BudgetSetting
        fields: list[str] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inst = self.instance
        self.fields["daily_cap_usd"].initial = Decimal(inst.daily_cap_cents or 0) / 100
        self.fields["run_cap_usd"].initial = None if inst.run_cap_cents is None else Decimal(inst.run_cap_cents) / 100

    def save(self, commit: bool = True) -> BudgetSetting:
        self.instance.daily_cap_cents = _cents(self.cleaned_data["daily_cap_usd"])
        self.instance.run_cap_cents = _cents(self.cleaned_data["run_cap_usd"])
        return super().save(commit)


def caps_text(daily: int, run: int | None) -> str:
    return f"daily cap {usd(daily)}, per-run cap {'none' if run is None else usd(run)}"


@admin.register(BudgetSetting)
class BudgetSettingAdmin(admin.ModelAdmin):
    """One page: the caps every worker reads. Changing them needs ``skiptrace.change_budgetsetting``;
    every change is audited (who, when, old → new). Without a row the environment's values show."""

    form = BudgetSettingForm
    fields = ("daily_cap_usd", "run_cap_usd", "source", "updated", "recent_changes")
    readonly_fields = ("source", "updated", "recent_changes")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # one row, edited through its change page (created on the first save)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None):
        if str(object_id) != str(BudgetSetting.SINGLETON):
            return None
        obj = BudgetSetting.objects.filter(pk=BudgetSetting.SINGLETON).first()
        if obj is None:  # the environment's caps until the first save
            env = budget_guard.env_caps()
            obj = BudgetSetting(pk=BudgetSetting.SINGLETON, daily_cap_cents=env.daily_cents,
                                run_cap_cents=env.run_cents)
        return obj

    def changelist_view(self, request: HttpRequest, extra_context=None) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:skiptrace_budgetsetting_change", args=[BudgetSetting.SINGLETON]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        return super().change_view(request, object_id, form_url, {"title": "Budget caps", **(extra_context or {})})

    @admin.display(description="Where the value comes from")
    def source(self, obj: BudgetSetting) -> str:
        if obj._state.adding:
            return (f"the environment (SKIP_TRACE_DAILY_BUDGET_USD = {usd(settings.SKIP_TRACE_DAILY_BUDGET_CENTS)}): "
                    "saving this page stores the caps in the database, which every worker reads from then on")
        return "the database (this page); the environment's value is no longer used"

    @admin.display(description="Last change")
    def updated(self, obj: BudgetSetting) -> str:
        if obj._state.adding:
            return "—"
        who = obj.updated_by.get_username() if obj.updated_by else "—"
        return f"{when(obj.updated_at)} by {who}"

    @admin.display(description="Recent changes")
    def recent_changes(self, obj: BudgetSetting) -> str:
        events = AuditEvent.objects.filter(action=AuditAction.CAP_CHANGED).order_by("-at", "-id")[:10]
        if not events:
            return "—"
        return format_html_join("", "<div>{} · {} · {}</div>",
                                ((when(e.at), e.actor_label, e.detail) for e in events))

    @staticmethod
    def _detail(obj: BudgetSetting) -> str:
        """"old → new", the old value read now (the stored row, else the environment's)."""
        before = BudgetSetting.objects.filter(pk=BudgetSetting.SINGLETON).first()
        old = budget_guard.env_caps() if before is None else budget_guard.BudgetCaps(
            before.daily_cap_cents, before.run_cap_cents, True)
        detail = f"{caps_text(old.daily_cents, old.run_cents)} → {caps_text(obj.daily_cap_cents, obj.run_cap_cents)}"
        if before is None:
            detail += " (the old value came from the environment)"
        return detail

    def construct_change_message(self, request, form, formsets, add=False):
        # called before ``save_model``: the stored row is still the old value
        request._budget_change_detail = self._detail(form.instance)
        return request._budget_change_detail

    def save_model(self, request: HttpRequest, obj: BudgetSetting, form, change: bool) -> None:
        from django.db import transaction

        detail = getattr(request, "_budget_change_detail", None) or self._detail(obj)
        with transaction.atomic():
            obj.updated_at, obj.updated_by = timezone.now(), request.user
            obj.save()
            AuditEvent.record(AuditAction.CAP_CHANGED, user=request.user, via="console", detail=detail)
        # a raised cap lets runs waiting for the budget go on now (the workers would at their next pass)
        budget_guard.budget_unpause(timezone.now())

    def response_change(self, request: HttpRequest, obj: BudgetSetting) -> HttpResponse:
        self.message_user(request, f"Saved: {caps_text(obj.daily_cap_cents, obj.run_cap_cents)}. Every worker "
                                   "uses it from its next reservation.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:skiptrace_budgetsetting_change", args=[obj.pk]))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at_shown", "actor_label", "action", "run", "detail")
    list_filter = ("action",)
    search_fields = ("=run_id", "actor_label")
    list_per_page = 50

    @admin.display(description="When", ordering="at")
    def at_shown(self, event: AuditEvent) -> str:
        return when(event.at)

    @admin.display(description="Run", ordering="run_id")
    def run(self, event: AuditEvent) -> str:
        return run_link(event.run_id)
