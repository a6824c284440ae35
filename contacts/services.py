"""Writes to leads and their contacts. Batched: a handful of queries per batch, not per lead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

from django.db import transaction

from contacts.models import Email, Lead, Phone
from skiptrace.bulk import insert_rows, row_factory, update_rows

SOURCE = "batchdata"
# Plain rows, not model instances: Model.__init__ costs about 60 µs, and a batch of 100 answers
# has ~500 phones and emails (most of a cached batch's Python time before).
_phone_row = row_factory(Phone)
_email_row = row_factory(Email)


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
    """Replace each lead's contacts with its answer, keeping the provenance (call, cached, stale).

    A lead whose contacts already come from the answering call (a cached re-run) keeps its phone
    and email rows: they are that call's contacts already, so only the provenance is updated.
    """
    latest = {u.lead_id: u for u in updates}  # one lead twice in a batch: the last answer wins
    if not latest:
        return
    phones: list = []
    emails: list = []
    with transaction.atomic():
        current = dict(Lead.objects.filter(lead_id__in=list(latest)).values_list("lead_id", "provider_call_id"))
        replace = [lid for lid, u in latest.items() if u.provider_call_id is None or current.get(lid) != u.provider_call_id]
        for lead_id in replace:
            u = latest[lead_id]
            for n, p in enumerate(u.contacts.get("phones") or []):
                phones.append(_phone_row(
                    lead_id=u.lead_id, number=p["number"], type=p.get("type") or "Unknown",
                    is_dnc=bool(p.get("isDoNotCall")), is_tcpa=bool(p.get("isTcpa")), confidence=p.get("confidence"),
                    source=SOURCE, provider_call_id=u.provider_call_id, position=n,
                ))
            for n, e in enumerate(u.contacts.get("emails") or []):
                emails.append(_email_row(
                    lead_id=u.lead_id, address=e["address"], is_primary=bool(e.get("isPrimary")),
                    confidence=e.get("confidence"), source=SOURCE, provider_call_id=u.provider_call_id, position=n,
                ))
        leads = [  # only the columns updated below
            SimpleNamespace(lead_id=u.lead_id, source=SOURCE, cached=u.cached, stale=u.stale,
                            matched=u.contacts.get("matched"), provider_call_id=u.provider_call_id, run_id=u.run_id,
                            contacts_updated_at=now, updated_at=now)
            for u in latest.values()
        ]
        if replace:
            Phone.objects.filter(lead_id__in=replace).delete()
            Email.objects.filter(lead_id__in=replace).delete()
        insert_rows(Phone, phones)
        insert_rows(Email, emails)
        update_rows(Lead, leads, ["source", "cached", "stale", "matched", "provider_call", "run_id",
                                  "contacts_updated_at", "updated_at"])
