from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from contacts import export, filters
from contacts.models import Email, Lead, Phone
from skiptrace.api import api_auth, error
from skiptrace.dialer import PROFILES, freshness_cutoff, normalize_type
from skiptrace.views import valid_id


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _phone_person(p: Phone) -> dict | None:
    """Whose number it is; null when the answer did not say (contacts stored before V3)."""
    if not (p.person_name or p.person_is_owner is not None or p.person_litigator or p.person_deceased):
        return None
    return {"name": p.person_name, "propertyOwner": p.person_is_owner, "litigator": p.person_litigator,
            "deceased": p.person_deceased}


def _email_person(e: Email) -> dict | None:
    if not (e.person_name or e.person_is_owner is not None):
        return None
    return {"name": e.person_name, "propertyOwner": e.person_is_owner}


@api_auth(("GET",))
def lead_contacts(request: HttpRequest, lead_id: str) -> HttpResponse:
    lead = Lead.objects.filter(lead_id=lead_id).prefetch_related("phones", "emails").first() if valid_id(lead_id) else None
    if lead is None:
        return error("NotFound", 404, f"no lead {lead_id!r}")
    now = timezone.now()
    fresh_after = freshness_cutoff(now)
    return JsonResponse({
        "leadId": lead.lead_id,
        "cached": lead.cached,
        "stale": lead.stale,
        "updatedAt": _iso(lead.contacts_updated_at),
        "matched": lead.matched,
        "providerCallId": lead.provider_call_id,
        "runId": lead.run_id,
        "phones": [
            {"number": p.number, "type": normalize_type(p.type), "isDoNotCall": p.is_dnc, "isTcpa": p.is_tcpa,
             "confidence": p.confidence, "source": p.source, "rank": p.rank, "carrier": p.carrier,
             "tested": p.tested, "reachable": p.reachable, "person": _phone_person(p),
             "callable": p.callable_at(fresh_after), "dncCheckedAt": _iso(p.dnc_checked_at),
             "dncStale": p.dnc_stale(fresh_after)}
            for p in lead.phones.all()
        ],
        "emails": [
            {"address": e.address, "isPrimary": e.is_primary, "confidence": e.confidence, "source": e.source,
             "rank": e.rank, "tested": e.tested, "person": _email_person(e)}
            for e in lead.emails.all()
        ],
    })


@api_auth(("GET",))
def contacts_export(request: HttpRequest) -> HttpResponse:
    """``GET /api/exports/contacts.csv?profile=seed|wide&run_id=&…filters``: the console's export, streamed."""
    params = request.GET
    profile = params.get("profile", export.DEFAULT_PROFILE)
    if profile not in PROFILES:
        return error("ValidationError", 400, f"profile: must be one of {', '.join(PROFILES)}",
                     fields={"profile": f"must be one of {', '.join(PROFILES)}"})
    now = timezone.now()
    try:
        leads = filters.apply(Lead.objects.order_by("lead_id"), params, now=now)
    except filters.FilterError as exc:
        return error("ValidationError", 400, str(exc), fields={exc.name: exc.why})
    return export.dialer_csv_response(leads, profile=profile, now=now)
