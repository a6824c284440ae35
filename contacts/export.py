"""The contacts export: the dialer CSV built from leads' *current* phones and emails.

Same bytes rules as a run's ``enriched.csv`` (``skiptrace.dialer``): header exactly
``DIALER_HEADER`` (profile ``seed``, the default) or ``WIDE_HEADER`` (profile ``wide``), UTF-8 with
BOM, every field quoted, formula-leading cells prefixed with ``'``. ``Phone1..3`` of the seed
profile are only callable numbers as 10 digits: never DNC/TCPA, never a litigator's or deceased
person's (the rows' person fields go back to the dialer as ``persons``), never one whose DNC status
(``Phone.dnc_checked_at``) is older than ``DNC_MAX_AGE_DAYS`` at ``now``. Streamed: leads are read in
chunks with their contacts prefetched (three queries per chunk), so an export of 100,000 leads never
sits in memory. Used by the console (action and "Export all") and by ``GET /api/exports/contacts.csv``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from django.db.models import Prefetch, QuerySet
from django.http import StreamingHttpResponse
from django.utils import timezone

from contacts.models import Email, Lead, Phone
from skiptrace.dialer import HEADERS, PROFILES, dialer_row, freshness_cutoff, stream_dialer_csv

CHUNK = 1000
DEFAULT_SOURCE = "batchdata"
DEFAULT_PROFILE = "seed"
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
    Each phone carries its ``dncCheckedAt`` (None: not known, stale).
    """
    persons: list[dict] = []
    index: dict[tuple, int] = {}
    phones = []
    for p in lead.phones.all():
        phone = {"number": p.number, "type": p.type, "isDoNotCall": p.is_dnc, "isTcpa": p.is_tcpa,
                 "confidence": p.confidence, "rank": p.rank, "tested": p.tested, "reachable": p.reachable,
                 "carrier": p.carrier, "dncCheckedAt": p.dnc_checked_at}
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


def lead_dialer_rows(
    leads: QuerySet[Lead], *, now: dt.datetime | None = None, profile: str = DEFAULT_PROFILE
) -> Iterator[list[str]]:
    """One dialer row per lead, in the queryset's order; a lead without contacts keeps its row.

    DNC freshness is judged at ``now`` (default: when the export starts).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown export profile {profile!r}")
    fresh_after = freshness_cutoff(now or timezone.now())
    for lead in with_contacts(leads).iterator(chunk_size=CHUNK):
        yield dialer_row(
            lead_id=lead.lead_id, address=lead.address, owner=lead.owner, contacts=lead_contacts(lead),
            source=lead.source or DEFAULT_SOURCE, cached=lead.cached, fresh_after=fresh_after, profile=profile,
        )


def export_filename(prefix: str = "contacts", profile: str = DEFAULT_PROFILE) -> str:
    tail = "" if profile == DEFAULT_PROFILE else f"-{profile}"
    return f"{prefix}{tail}-{timezone.now():%Y%m%d-%H%M%S}.csv"


def dialer_csv_response(
    leads: QuerySet[Lead], *, filename: str | None = None, profile: str = DEFAULT_PROFILE,
    now: dt.datetime | None = None,
) -> StreamingHttpResponse:
    if profile not in PROFILES:
        raise ValueError(f"unknown export profile {profile!r}")
    rows = lead_dialer_rows(leads, now=now, profile=profile)
    response = StreamingHttpResponse(stream_dialer_csv(rows, header=HEADERS[profile]),
                                     content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename or export_filename(profile=profile)}"'
    return response
