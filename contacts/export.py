"""The contacts export: the contract's dialer CSV built from leads' *current* phones and emails.

Same bytes rules as a run's ``enriched.csv`` (``skiptrace.dialer``): header exactly
``DIALER_HEADER``, UTF-8 with BOM, every field quoted, formula-leading cells prefixed with ``'``,
Phone1..3 only callable numbers as 10 digits (never DNC/TCPA, never a litigator's or deceased
person's: the rows' person fields go back to the dialer as ``persons``). Streamed: leads are read
in chunks with their contacts prefetched (three queries per chunk), so an export of 100,000 leads
never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from contacts.models import Email, Lead, Phone
from skiptrace.dialer import dialer_row, stream_dialer_csv

CHUNK = 1000
DEFAULT_SOURCE = "batchdata"
_NO_PERSON = ("", None, False, False)  # a phone row's person fields when its person is not known


def with_contacts(leads: QuerySet[Lead]) -> QuerySet[Lead]:
    """``leads`` with phones and emails prefetched in provider order (replacing other prefetches)."""
    return leads.prefetch_related(None).prefetch_related(
        Prefetch("phones", queryset=Phone.objects.order_by("position", "id")),
        Prefetch("emails", queryset=Email.objects.order_by("position", "id")),
    )


def lead_contacts(lead: Lead) -> dict:
    """The lead's stored contacts in the provider-contacts shape that ``skiptrace.dialer`` reads.

    The phones' persons come back as ``persons`` (one entry per distinct person of the rows), so the
    dialer leaves out a litigator's or deceased person's numbers here exactly as in a run's
    ``enriched.csv``; rows without a person (stored before V3) give the old shape, without ``persons``.
    """
    persons: list[dict] = []
    index: dict[tuple, int] = {}
    phones = []
    for p in lead.phones.all():
        phone = {"number": p.number, "type": p.type, "isDoNotCall": p.is_dnc, "isTcpa": p.is_tcpa,
                 "confidence": p.confidence}
        key = (p.person_name, p.person_is_owner, p.person_litigator, p.person_deceased)
        if key != _NO_PERSON:
            if key not in index:
                index[key] = len(persons)
                persons.append({"name": p.person_name, "propertyOwner": p.person_is_owner,
                                "litigator": p.person_litigator, "deceased": p.person_deceased})
            phone["person"] = index[key]
        phones.append(phone)
    contacts = {
        "phones": phones,
        "emails": [
            {"address": e.address, "isPrimary": e.is_primary, "confidence": e.confidence}
            for e in lead.emails.all()
        ],
    }
    if persons:
        contacts["persons"] = persons
    return contacts


def lead_dialer_rows(leads: QuerySet[Lead]) -> Iterator[list[str]]:
    """One dialer row per lead, in the queryset's order; a lead without contacts keeps its row."""
    for lead in with_contacts(leads).iterator(chunk_size=CHUNK):
        yield dialer_row(
            lead_id=lead.lead_id, address=lead.address, owner=lead.owner, contacts=lead_contacts(lead),
            source=lead.source or DEFAULT_SOURCE, cached=lead.cached,
        )


def export_filename(prefix: str = "contacts") -> str:
    return f"{prefix}-{timezone.now():%Y%m%d-%H%M%S}.csv"


def dialer_csv_response(leads: QuerySet[Lead], *, filename: str | None = None) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream_dialer_csv(lead_dialer_rows(leads)), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename or export_filename()}"'
    return response
