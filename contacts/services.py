"""Writes to leads and their contacts. Batched: a handful of queries per batch, not per lead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from contacts.models import Email, Lead, Phone
from skiptrace.bulk import insert_rows, update_rows

SOURCE = "batchdata"


@dataclass(frozen=True)
class ContactsUpdate:
    lead_id: str
    run_id: str | None
    contacts: dict
    provider_call_id: int | None
    cached: bool
    stale: bool


def leads_upsert(leads: Sequence[Lead]) -> None:
    """Insert or refresh leads by lead_id (a re-import updates the address and owner shown)."""
    if not leads:
        return
    insert_rows(
        Lead,
        leads,
        conflict=["lead_id"],
        update_fields=["first_name", "last_name", "street", "city", "state", "zip", "address", "owner",
                       "is_entity", "signature", "updated_at"],
    )


def leads_contacts_save(updates: Sequence[ContactsUpdate], *, now: dt.datetime) -> None:
    """Replace each lead's contacts with its answer, keeping the provenance (call, cached, stale)."""
    latest = {u.lead_id: u for u in updates}  # one lead twice in a batch: the last answer wins
    if not latest:
        return
    ids = list(latest)
    phones: list[Phone] = []
    emails: list[Email] = []
    leads: list[Lead] = []
    for u in latest.values():
        for n, p in enumerate(u.contacts.get("phones") or []):
            phones.append(Phone(
                lead_id=u.lead_id, number=p["number"], type=p.get("type") or "Unknown",
                is_dnc=bool(p.get("isDoNotCall")), is_tcpa=bool(p.get("isTcpa")), confidence=p.get("confidence"),
                source=SOURCE, provider_call_id=u.provider_call_id, position=n,
            ))
        for n, e in enumerate(u.contacts.get("emails") or []):
            emails.append(Email(
                lead_id=u.lead_id, address=e["address"], is_primary=bool(e.get("isPrimary")),
                confidence=e.get("confidence"), source=SOURCE, provider_call_id=u.provider_call_id, position=n,
            ))
        leads.append(Lead(
            lead_id=u.lead_id, source=SOURCE, cached=u.cached, stale=u.stale, matched=u.contacts.get("matched"),
            provider_call_id=u.provider_call_id, run_id=u.run_id, contacts_updated_at=now, updated_at=now,
        ))
    with transaction.atomic():
        Phone.objects.filter(lead_id__in=ids).delete()
        Email.objects.filter(lead_id__in=ids).delete()
        insert_rows(Phone, phones)
        insert_rows(Email, emails)
        update_rows(Lead, leads, ["source", "cached", "stale", "matched", "provider_call", "run_id",
                                  "contacts_updated_at", "updated_at"])
