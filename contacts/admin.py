"""Contacts in the ops console (``/admin/contacts/``): leads with their callable phones and emails,
filters for the derived states ops ask about (callable, DNC status stale, …), the lead page with
provenance and why each number has its place, the dialer exports (seed and wide) and the re-trace
of leads whose DNC status is stale (quoted, then one forced run)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from contacts import export, filters, refresh
from contacts.models import Email, Lead, Phone
from skiptrace.admin import badge, call_link, run_link, when
from skiptrace.dialer import (
    PROFILES,
    freshness_cutoff,
    normalize_type,
    ordered_emails,
    phone_plan,
    rank_reason,
)
from skiptrace.models import ProviderCall, Run, RunItem

RECENT_CHOICES = 15  # how many recent sources / runs the filters offer


def format_phone(digits: str) -> str:
    """``8135550142`` -> ``(813) 555-0142``."""
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}" if len(digits) == 10 else digits


def _fresh_after():
    return freshness_cutoff(timezone.now())


# --- filters ---------------------------------------------------------------------------------------


class HasPhoneFilter(admin.SimpleListFilter):
    title = "has phone"
    parameter_name = "has_phone"

    def lookups(self, request, model_admin):
        return [("yes", "Yes (callable)"), ("dnc_only", "Only DNC/TCPA numbers"),
                ("no", "No phone")]

    def queryset(self, request, queryset):
        return filters.has_phone(queryset, self.value() or "", now=timezone.now())


class DncStaleFilter(admin.SimpleListFilter):
    """Leads with a number kept out of Phone1..3 only because its DNC status is older than
    ``DNC_MAX_AGE_DAYS``: what the "Re-trace stale DNC" action and ``manage.py refresh_stale`` refresh."""

    title = "DNC status"
    parameter_name = "dnc_stale"

    def lookups(self, request, model_admin):
        return [("yes", "DNC status stale"), ("no", "No stale DNC status")]

    def queryset(self, request, queryset):
        return filters.dnc_stale(queryset, self.value() or "", now=timezone.now())


class HasEmailFilter(admin.SimpleListFilter):
    title = "has email"
    parameter_name = "has_email"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        return filters.has_email(queryset, self.value() or "")


class UpdatedSinceFilter(admin.SimpleListFilter):
    title = "contacts updated since"
    parameter_name = "updated_since"
    WINDOWS = {"1d": dt.timedelta(days=1), "7d": dt.timedelta(days=7), "30d": dt.timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [("1d", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days"), ("never", "Never traced")]

    def queryset(self, request, queryset):
        return filters.updated_since(queryset, self.value() or "", now=timezone.now())


class SourceFilter(admin.SimpleListFilter):
    """The uploaded list (a run's source label) a lead came in with; any label works in the URL."""

    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        labels: list[str] = []
        for label in Run.objects.exclude(source_label=None).order_by("-created_at").values_list("source_label", flat=True)[:200]:
            if label not in labels:
                labels.append(label)
            if len(labels) >= RECENT_CHOICES:
                break
        return [(label, label) for label in labels]

    def queryset(self, request, queryset):
        return queryset.filter(filters.of_source(self.value())) if self.value() else queryset


class RunFilter(admin.SimpleListFilter):
    """The leads of one run (the run page links here with ``?run=<run_id>``)."""

    title = "run"
    parameter_name = "run"

    def lookups(self, request, model_admin):
        recent = Run.objects.order_by("-created_at").values_list("run_id", "source_label")[:RECENT_CHOICES]
        choices = [(run_id, f"{label or '—'} ({run_id[-6:]})") for run_id, label in recent]
        if self.value() and self.value() not in {c[0] for c in choices}:
            choices.insert(0, (self.value(), self.value()))
        return choices

    def queryset(self, request, queryset):
        return queryset.filter(filters.of_run(self.value())) if self.value() else queryset


class CachedFilter(admin.SimpleListFilter):
    title = "cached"
    parameter_name = "cached"

    def lookups(self, request, model_admin):
        return [("yes", "Cached only"), ("stale", "Stale (expired cache)"), ("no", "Fresh from the provider")]

    def queryset(self, request, queryset):
        return filters.cached(queryset, self.value() or "")


# --- the lead page's contacts ------------------------------------------------------------------------


class ContactInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("provider_call").only(
            *self.model_fields, "lead", "provider_call__id", "provider_call__run_id"
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("contacts.view_lead")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Provider call")
    def call(self, contact: Phone | Email) -> str:
        return call_link(contact.provider_call_id)

    @admin.display(description="Call's run")
    def call_run(self, contact: Phone | Email) -> str:
        return run_link(contact.provider_call.run_id if contact.provider_call else None)


def _person(name: str, is_owner: bool | None, *, litigator: bool = False, deceased: bool = False) -> str:
    """Whose contact it is: the name, "owner" / "not owner", and the flags that forbid dialing."""
    if not (name or is_owner is not None or litigator or deceased):
        return "—"
    owner = "" if is_owner is None else ("owner" if is_owner else "not owner")
    return format_html(
        '<span class="ops-person">{}{}</span>{}{}',
        name or "(no name)", f" · {owner}" if owner else "",
        format_html(" {}", badge("litigator", "#7c2d12")) if litigator else "",
        format_html(" {}", badge("deceased", "#374151")) if deceased else "",
    )


class PhoneInline(ContactInline):
    model = Phone
    model_fields = ("number", "type", "is_dnc", "is_tcpa", "confidence", "rank", "carrier", "tested",
                    "reachable", "person_name", "person_is_owner", "person_litigator", "person_deceased",
                    "dnc_checked_at", "source", "position")
    fields = readonly_fields = ("phone", "person", "line_type", "is_dnc", "is_tcpa", "dnc_checked", "confidence",
                                "rank", "carrier", "tested", "reachable", "source", "dialer", "call", "call_run")
    verbose_name_plural = "phones (provider order)"  # the dialer's order and why: the lead's "Dialer row"

    @admin.display(description="Type")
    def line_type(self, p: Phone) -> str:
        return normalize_type(p.type)

    @admin.display(description="DNC checked")
    def dnc_checked(self, p: Phone) -> str:
        if p.dnc_checked_at is None:
            return format_html("not known {}", badge("stale", "#d97706"))
        stale = p.dnc_stale(_fresh_after())
        return format_html("{}{}", when(p.dnc_checked_at), format_html(" {}", badge("stale", "#d97706")) if stale else "")

    @admin.display(description="Number")
    def phone(self, p: Phone) -> str:
        digits = p.number[2:] if p.number.startswith("+1") else p.number
        return format_phone(digits)

    @admin.display(description="Person")
    def person(self, p: Phone) -> str:
        return _person(p.person_name, p.person_is_owner, litigator=p.person_litigator,
                       deceased=p.person_deceased)

    @admin.display(description="Dialer")
    def dialer(self, p: Phone) -> str:
        if p.blocked:
            return badge("excluded", "#b91c1c")
        if p.dnc_stale(_fresh_after()):
            return badge("DNC stale", "#d97706")
        return badge("callable", "#15803d")


class EmailInline(ContactInline):
    model = Email
    model_fields = ("address", "is_primary", "confidence", "rank", "tested", "person_name",
                    "person_is_owner", "source", "position")
    fields = readonly_fields = ("address", "person", "is_primary", "confidence", "rank", "tested", "source",
                                "call", "call_run")
    verbose_name_plural = "emails (provider order)"

    @admin.display(description="Person")
    def person(self, e: Email) -> str:
        return _person(e.person_name, e.person_is_owner)


# --- leads -----------------------------------------------------------------------------------------


@admin.register(Lead)
class LeadAdmin(admin.ModelAdmin):
    list_display = ("lead", "address", "owner", "phone1", "phone2", "phone3", "email1", "email2", "email3",
                    "updated", "cached_badge")
    list_display_links = ("lead",)
    list_filter = (HasPhoneFilter, DncStaleFilter, HasEmailFilter, UpdatedSinceFilter, SourceFilter, CachedFilter,
                   RunFilter)
    search_fields = ("lead_id", "owner", "first_name", "last_name", "street")
    list_per_page = 50
    empty_value_display = ""  # six contact columns of dashes hide the numbers that are there
    actions = ("export_dialer_csv", "export_wide_csv", "refresh_stale_dnc")
    inlines = (PhoneInline, EmailInline)
    fieldsets = (
        ("Lead", {"fields": ("lead_id", "owner", "address", "first_name", "last_name", "street", "city", "state",
                             "zip", "is_entity")}),
        ("Contacts and provenance", {"fields": ("cached_badge", "matched", "source", "contacts_updated_at",
                                                "served_by_run", "served_by_call", "call_run", "dialer_preview")}),
        ("Runs this lead was in", {"fields": ("runs",)}),
    )
    readonly_fields = tuple(f for _, spec in fieldsets for f in spec["fields"])

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lead]:
        callable_now = filters.callable_phone(_fresh_after())
        return export.with_contacts(super().get_queryset(request).annotate(has_callable_phone=callable_now))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # leads come in with an upload (Runs → Upload a lead list)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Lead], search_term: str):
        """Also find a lead by one of its phone numbers (any format: "(813) 555-0142", "+1 813…")
        or by an email address (any case)."""
        found, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        digits = re.sub(r"\D", "", term)
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
        ids: set[str] = set()
        if len(digits) == 10 and not re.search(r"[A-Za-z]", term):
            ids |= set(Phone.objects.filter(number="+1" + digits).values_list("lead_id", flat=True))
        if "@" in term and " " not in term:
            ids |= set(Email.objects.filter(address__iexact=term).values_list("lead_id", flat=True))
        if ids:
            found = found | queryset.filter(pk__in=ids)
        return found, may_have_duplicates

    def has_change_permission(self, request: HttpRequest, obj: Lead | None = None) -> bool:
        return False  # contacts are the provider's answer; they change only through a run

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        return super().changelist_view(request, {"title": "Contacts", **(extra_context or {})})

    # -- columns: one computation per lead from the prefetched phones and emails --

    def _plan(self, lead: Lead) -> list:
        plan = getattr(lead, "_dialer_plan", None)
        if plan is None:
            contacts = lead._dialer_contacts = export.lead_contacts(lead)
            plan = lead._dialer_plan = phone_plan(contacts, fresh_after=_fresh_after())
        return plan

    def _dialer(self, lead: Lead) -> tuple[list[str], list[str], int, int]:
        cells = getattr(lead, "_dialer_cells", None)
        if cells is None:
            plan = self._plan(lead)
            phones = [e.digits for e in plan if e.callable]
            excluded = sum(1 for e in plan if e.blocked)
            stale = sum(1 for e in plan if e.flags and not e.blocked)
            cells = lead._dialer_cells = (phones, ordered_emails(lead._dialer_contacts), excluded, stale)
        return cells

    def _phone(self, lead: Lead, n: int) -> str:
        phones = self._dialer(lead)[0]
        return format_phone(phones[n]) if n < len(phones) else ""

    def _email(self, lead: Lead, n: int) -> str:
        emails = self._dialer(lead)[1]
        return emails[n] if n < len(emails) else ""

    @admin.display(description="LeadID", ordering="lead_id")
    def lead(self, lead: Lead) -> str:
        return lead.lead_id

    @admin.display(description="Phone1", ordering="has_callable_phone")
    def phone1(self, lead: Lead) -> str:
        return self._phone(lead, 0)

    @admin.display(description="Phone2")
    def phone2(self, lead: Lead) -> str:
        return self._phone(lead, 1)

    @admin.display(description="Phone3")
    def phone3(self, lead: Lead) -> str:
        return self._phone(lead, 2)

    @admin.display(description="Email1")
    def email1(self, lead: Lead) -> str:
        return self._email(lead, 0)

    @admin.display(description="Email2")
    def email2(self, lead: Lead) -> str:
        return self._email(lead, 1)

    @admin.display(description="Email3")
    def email3(self, lead: Lead) -> str:
        return self._email(lead, 2)

    @admin.display(description="UpdatedAt", ordering="contacts_updated_at")
    def updated(self, lead: Lead) -> str:
        return when(lead.contacts_updated_at) if lead.contacts_updated_at else ""

    @admin.display(description="Cached", ordering="cached")
    def cached_badge(self, lead: Lead) -> str:
        if lead.contacts_updated_at is None:
            return badge("not traced", "#9ca3af")
        if lead.stale:
            return badge("stale cache", "#d97706")
        if lead.cached:
            return badge("cached", "#0e7490")
        return badge("fresh", "#15803d")

    # -- the lead page --

    @admin.display(description="Served by run")
    def served_by_run(self, lead: Lead) -> str:
        return run_link(lead.run_id)

    @admin.display(description="Provider call")
    def served_by_call(self, lead: Lead) -> str:
        return call_link(lead.provider_call_id)

    @admin.display(description="Call made in run")
    def call_run(self, lead: Lead) -> str:
        """The run whose request fetched these contacts (for a cache hit, an earlier run)."""
        if lead.provider_call_id is None:
            return "—"
        return run_link(ProviderCall.objects.filter(pk=lead.provider_call_id).values_list("run_id", flat=True).first())

    @admin.display(description="Dialer row")
    def dialer_preview(self, lead: Lead) -> str:
        phones, emails, excluded, stale = self._dialer(lead)
        of_persons = len({p.number for p in lead.phones.all() if p.person_litigator or p.person_deceased})
        summary = format_html(
            "Phones: {} · Emails: {} · DNC/TCPA excluded: {}{} · DNC status stale: {}",
            ", ".join(format_phone(p) for p in phones[:3]) or "—", ", ".join(emails[:3]) or "—", excluded,
            f" ({of_persons} of a litigator or deceased person)" if of_persons else "", stale,
        )
        return format_html('{}<ol class="ops-dialer-order">{}</ol>', summary, self._placement(lead))

    def _placement(self, lead: Lead) -> str:
        """One line per number: its place (Phone1..3, callable beyond 3, or not dialed) and why."""
        lines = []
        place = 0
        for e in self._plan(lead):
            reason = rank_reason(e.phone, e.person)
            if e.callable:
                place += 1
                where = f"Phone{place}" if place <= 3 else f"callable #{place} (beyond Phone3)"
                lines.append((format_phone(e.digits), where, reason))
            else:
                why = ", ".join({"dnc": "on DNC", "tcpa": "TCPA flagged", "litigator": "person is a litigator",
                                 "deceased": "person is deceased", "dnc_stale": "DNC status stale"}[f]
                                for f in e.flag_text().split("|"))
                lines.append((format_phone(e.digits), "not dialed", why))
        return format_html_join("", "<li>{} — {}: {}</li>", lines)

    @admin.display(description="Runs")
    def runs(self, lead: Lead) -> str:
        items = list(
            RunItem.objects.filter(lead_id=lead.lead_id).order_by("-id")
            .values_list("run_id", "run__source_label", "status", "cached", "last_error")[:20]
        )
        if not items:
            return "—"
        return format_html_join(
            "", "<div>{} · {} · {}{}</div>",
            ((run_link(run_id), label or "—", status, (" (cached)" if cached else "") + (f" — {err}" if err else ""))
             for run_id, label, status, cached, err in items),
        )

    # -- the export: selected rows (action) or everything the filters match (button) --

    @admin.action(description="Export selected to the dialer CSV", permissions=["view"])
    def export_dialer_csv(self, request: HttpRequest, queryset: QuerySet[Lead]) -> HttpResponse:
        return export.dialer_csv_response(queryset)

    @admin.action(description="Export selected to the wide CSV (10 phones with flags, 5 emails)", permissions=["view"])
    def export_wide_csv(self, request: HttpRequest, queryset: QuerySet[Lead]) -> HttpResponse:
        return export.dialer_csv_response(queryset, profile="wide")

    @admin.action(description="Re-trace selected leads whose DNC status is stale (quote first)",
                  permissions=["refresh"])
    def refresh_stale_dnc(self, request: HttpRequest, queryset: QuerySet[Lead]) -> HttpResponse | None:
        """First a page with the quote; on its "Re-trace" button, ONE forced run of the stale leads."""
        now = timezone.now()
        stale = refresh.stale_leads(now=now, leads=queryset.prefetch_related(None))
        inputs = refresh.lead_inputs(stale.iterator(chunk_size=2000))
        if not inputs:
            self.message_user(request, "None of the selected leads has a stale DNC status: nothing to re-trace.",
                              messages.WARNING)
            return None
        if request.POST.get("confirm") == "yes":
            run = refresh.refresh(inputs, now=now)
            self.message_user(request, f"Run {run.run_id} created: {run.total} lead(s) re-traced (force); "
                                       "the worker sends them inside the budget.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:skiptrace_run_change", args=[run.pk]))
        quote = refresh.quote(inputs, now=now)
        context = {
            **self.admin_site.each_context(request),
            "title": "Re-trace leads whose DNC status is stale",
            "opts": self.model._meta,
            "quote": quote,
            "quote_lines": quote.lines(),
            "selected": queryset.count(),
            "lead_ids": [lead.lead_id for lead in inputs],
            "worst_case_usd": f"{quote.worst_case_cents / 100:,.2f}",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action": "refresh_stale_dnc",
        }
        return TemplateResponse(request, "admin/contacts/lead/refresh_confirm.html", context)

    def has_refresh_permission(self, request: HttpRequest) -> bool:
        """Re-tracing spends money: the same right as starting a run (skiptrace | run | add)."""
        return request.user.has_perm("skiptrace.add_run")

    def export_view(self, request: HttpRequest) -> HttpResponse:
        """Every lead matching the changelist's current filters and search, in its order
        (``?profile=wide`` for the wide CSV)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        profile = request.GET.get("profile", export.DEFAULT_PROFILE)
        if profile not in PROFILES:
            self.message_user(request, f"Unknown export profile {profile!r}; nothing was exported.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:contacts_lead_changelist"))
        if "profile" in request.GET:  # not a filter of the changelist
            params = request.GET.copy()
            del params["profile"]
            request.GET = params
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            self.message_user(request, "Those filters are not valid; nothing was exported.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:contacts_lead_changelist"))
        return export.dialer_csv_response(changelist.get_queryset(request), profile=profile)

    def get_urls(self):
        return [
            path("export/", self.admin_site.admin_view(self.export_view), name="contacts_lead_export"),
            *super().get_urls(),
        ]
