"""Writes to leads and their contacts. Batched: a handful of queries per batch, not per lead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

from django.db import transaction

from contacts.models import Email, Lead, Phone
from skiptrace.bulk import delete_rows, insert_rows, row_factory, update_rows
from skiptrace.dialer import normalize_type

SOURCE = "batchdata"
# Plain rows, not model instances: Model.__init__ costs about 60 µs, and a batch of 100 answers
# has ~500 phones and emails (most of a cached batch's Python time before).
_phone_row = row_factory(Phone)
_email_row = row_factory(Email)
_NO_PERSON = ("", None, False, False)


def _bool_or_none(value: object) -> bool | None:
    return value if value is None or value.__class__ is bool else None


def _int_or_none(value: object) -> int | None:
    return value if value.__class__ is int else None


def _str_or_none(value: object) -> str | None:
    return value if value.__class__ is str else None


def _person_fields(contacts: dict) -> tuple[list[tuple | None], tuple]:
    """Per entry of ``contacts["persons"]``: (name, is_owner, litigator, deceased), None for a
    malformed entry; and the fields of a phone whose person is not known: in an answer flagged
    ``litigator`` those count as a litigator's, as in ``skiptrace.dialer`` (never dial on ambiguity).
    """
    persons = contacts.get("persons")
    fields = [
        (str(p.get("name") or ""), _bool_or_none(p.get("propertyOwner")), bool(p.get("litigator")),
         bool(p.get("deceased")))
        if isinstance(p, dict) else None
        for p in (persons if isinstance(persons, list) else ())
    ]
    unknown = ("", None, True, False) if contacts.get("litigator") else _NO_PERSON
    return fields, unknown


def _person(fields: list[tuple | None], unknown: tuple, index: object) -> tuple:
    if index.__class__ is int and 0 <= index < len(fields):
        return fields[index] or unknown
    return unknown


@dataclass(frozen=True)
class ContactsUpdate:
    lead_id: str
    run_id: str | None
    contacts: dict
    provider_call_id: int | None
    cached: bool
    stale: bool
    # when the provider gave this answer (the DNC time of its phones); None: looked up (see below)
    answered_at: dt.datetime | None = None


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


def _answer_times(updates: Sequence[ContactsUpdate], *, now: dt.datetime) -> dict[str, dt.datetime | None]:
    """When each answer was given (its phones' ``dnc_checked_at``), by lead id, in at most two queries.

    ``answered_at`` when the caller knows it; else, for a cached answer, the ``created_at`` of the
    cache entry written from its call (the provider did not check again), then the call's
    ``finished_at``; for a fresh answer, the call's ``finished_at``, else ``now``. A cached answer
    whose time cannot be found keeps None: its numbers read as stale, never as freshly checked.
    """
    from skiptrace.models import CacheEntry, ProviderCall

    times: dict[str, dt.datetime | None] = {}
    call_ids = {u.provider_call_id for u in updates if u.answered_at is None and u.provider_call_id is not None}
    cached_ids = {u.provider_call_id for u in updates if u.answered_at is None and u.cached} & call_ids
    entry_at: dict[int, dt.datetime] = {}
    if cached_ids:
        for call_id, created in CacheEntry.objects.filter(provider_call_id__in=cached_ids).values_list(
            "provider_call_id", "created_at"
        ):
            entry_at[call_id] = min(created, entry_at.get(call_id, created))
    finished: dict[int, dt.datetime | None] = {}
    if call_ids - set(entry_at):
        finished = dict(ProviderCall.objects.filter(id__in=call_ids - set(entry_at)).values_list("id", "finished_at"))
    for u in updates:
        if u.answered_at is not None:
            times[u.lead_id] = u.answered_at
        elif u.provider_call_id is None:
            times[u.lead_id] = None if u.cached else now
        elif u.provider_call_id in entry_at:
            times[u.lead_id] = entry_at[u.provider_call_id]
        else:
            at = finished.get(u.provider_call_id)
            times[u.lead_id] = at if at is not None or u.cached else now
    return times


def leads_contacts_save(updates: Sequence[ContactsUpdate], *, now: dt.datetime, fresh: bool = False) -> None:
    """Replace each lead's contacts with its answer, keeping the provenance (call, cached, stale).

    A lead whose contacts already come from the answering call (a cached re-run) keeps its phone
    and email rows: they are that call's contacts already, so only the provenance is updated (and
    the phones keep their DNC time: the provider did not check them again). Phone types are stored
    normalized (Mobile / Landline / VoIP / Unknown).

    ``fresh``: every update is the answer of a call completed in this transaction, so no lead can
    carry it yet and all are replaced without reading the leads first (one round trip a batch).
    """
    latest = {u.lead_id: u for u in updates}  # one lead twice in a batch: the last answer wins
    if not latest:
        return
    phones: list = []
    emails: list = []
    with transaction.atomic(savepoint=False):  # inside the recording transaction: no SAVEPOINT round trips
        current = {} if fresh else dict(
            Lead.objects.filter(lead_id__in=list(latest)).values_list("lead_id", "provider_call_id"))
        replace = [lid for lid, u in latest.items() if u.provider_call_id is None or current.get(lid) != u.provider_call_id]
        answered = _answer_times([latest[lid] for lid in replace], now=now) if replace else {}
        for lead_id in replace:
            u = latest[lead_id]
            contacts = u.contacts
            checked_at = answered[lead_id]
            if contacts.get("persons") or contacts.get("litigator"):
                persons, unknown = _person_fields(contacts)
            else:  # old-shaped contacts (no persons): nothing to look up
                persons, unknown = [], _NO_PERSON
            for n, p in enumerate(contacts.get("phones") or []):
                name, owner, litigator, deceased = _person(persons, unknown, p.get("person"))
                phones.append(_phone_row(
                    lead_id=u.lead_id, number=p["number"], type=normalize_type(p.get("type")),
                    is_dnc=bool(p.get("isDoNotCall")), is_tcpa=bool(p.get("isTcpa")), confidence=p.get("confidence"),
                    source=SOURCE, provider_call_id=u.provider_call_id, position=n,
                    rank=_int_or_none(p.get("rank")), carrier=_str_or_none(p.get("carrier")),
                    tested=_bool_or_none(p.get("tested")), reachable=_bool_or_none(p.get("reachable")),
                    person_name=name, person_is_owner=owner, person_litigator=litigator,
                    person_deceased=deceased, dnc_checked_at=checked_at,
                ))
            for n, e in enumerate(contacts.get("emails") or []):
                name, owner, _, _ = _person(persons, _NO_PERSON, e.get("person"))
                emails.append(_email_row(
                    lead_id=u.lead_id, address=e["address"], is_primary=bool(e.get("isPrimary")),
                    confidence=e.get("confidence"), source=SOURCE, provider_call_id=u.provider_call_id, position=n,
                    rank=_int_or_none(e.get("rank")), tested=_bool_or_none(e.get("tested")),
                    person_name=name, person_is_owner=owner,
                ))
        leads = [  # only the columns updated below
            SimpleNamespace(lead_id=u.lead_id, source=SOURCE, cached=u.cached, stale=u.stale,
                            matched=u.contacts.get("matched"), provider_call_id=u.provider_call_id, run_id=u.run_id,
                            contacts_updated_at=now, updated_at=now)
            for u in latest.values()
        ]
        # Inside the recording of an answer (``bulk.together``), these five writes are one statement.
        delete_rows(Phone, "lead_id", replace)
        delete_rows(Email, "lead_id", replace)
        insert_rows(Phone, phones)
        insert_rows(Email, emails)
        update_rows(Lead, leads, ["source", "cached", "stale", "matched", "provider_call", "run_id",
                                  "contacts_updated_at", "updated_at"])
