from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from contacts.models import Lead
from skiptrace.api import api_auth, error
from skiptrace.views import valid_id


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


@api_auth(("GET",))
def lead_contacts(request: HttpRequest, lead_id: str) -> HttpResponse:
    lead = Lead.objects.filter(lead_id=lead_id).prefetch_related("phones", "emails").first() if valid_id(lead_id) else None
    if lead is None:
        return error("NotFound", 404, f"no lead {lead_id!r}")
    return JsonResponse({
        "leadId": lead.lead_id,
        "cached": lead.cached,
        "stale": lead.stale,
        "updatedAt": _iso(lead.contacts_updated_at),
        "matched": lead.matched,
        "providerCallId": lead.provider_call_id,
        "runId": lead.run_id,
        "phones": [
            {"number": p.number, "type": p.type, "isDoNotCall": p.is_dnc, "isTcpa": p.is_tcpa,
             "confidence": p.confidence, "source": p.source}
            for p in lead.phones.all()
        ],
        "emails": [
            {"address": e.address, "isPrimary": e.is_primary, "confidence": e.confidence, "source": e.source}
            for e in lead.emails.all()
        ],
    })
