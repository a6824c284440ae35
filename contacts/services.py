"""Writes to leads and their contacts. Batched: a handful of queries per batch, not per lead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from django.db import transaction

from contacts.models import Email, Lead, Phone

SOURCE = "batchdata"


def leads_upsert(leads: Sequence[Lead]) -> None:
    """Insert or refresh leads by lead_id (a re-import updates the address and owner shown)."""
    if not leads:
        return
    Lead.objects.bulk_create(
        leads,
        update_conflicts=True,
        unique_fields=["lead_id"],
        update_fields=["first_name", "last_name", "street", "city", "state", "zip", "address", "owner",
                       "is_entity", "signature", "updated_at"],
        batch_size=500,
    )


def leads_contacts_save(
    *,
    lead_ids: Iterable[tuple[str, str | None]],
    contacts: dict,
    provider_call_id: int | None,
    cached: bool,
    stale: bool,
    now: dt.datetime,
) -> None:
    """Replace the contacts of these leads with one answer, keeping its provenance."""
    pairs = list(lead_ids)
    if not pairs:
        return
    ids = [lead_id for lead_id, _ in pairs]
    with transaction.atomic():
        Phone.objects.filter(lead_id__in=ids).delete()
        Email.objects.filter(lead_id__in=ids).delete()
        phones = [
            Phone(
                lead_id=lead_id, number=p["number"], type=p.get("type") or "Unknown",
                is_dnc=bool(p.get("isDoNotCall")), is_tcpa=bool(p.get("isTcpa")), confidence=p.get("confidence"),
                source=SOURCE, provider_call_id=provider_call_id, position=n,
            )
            for lead_id in ids
            for n, p in enumerate(contacts.get("phones") or [])
        ]
        emails = [
            Email(
                lead_id=lead_id, address=e["address"], is_primary=bool(e.get("isPrimary")),
                confidence=e.get("confidence"), source=SOURCE, provider_call_id=provider_call_id, position=n,
            )
            for lead_id in ids
            for n, e in enumerate(contacts.get("emails") or [])
        ]
        Phone.objects.bulk_create(phones, batch_size=500)
        Email.objects.bulk_create(emails, batch_size=500)
        by_run: dict[str | None, list[str]] = {}
        for lead_id, run_id in pairs:
            by_run.setdefault(run_id, []).append(lead_id)
        for run_id, run_lead_ids in by_run.items():
            Lead.objects.filter(lead_id__in=run_lead_ids).update(
                source=SOURCE, cached=cached, stale=stale, matched=contacts.get("matched"),
                provider_call_id=provider_call_id, run_id=run_id, contacts_updated_at=now, updated_at=now,
            )
