"""The V1 parser: one ``results.persons[i]`` entry, one person and their contacts.
"""

from __future__ import annotations

from typing import Any

from skiptrace.provider.checks import (
    check_address_echo,
    list_field,
    payload_hash,
    person_name,
)
from skiptrace.provider.cleaning import (
    merge_emails,
    merge_phones,
    parse_emails,
    parse_phones,
    read_flag,
)
from skiptrace.provider.model import (
    Email,
    Person,
    Phone,
    TraceRequest,
    TraceResult,
    unreadable,
)


def parse_person(i: int, person: Any, req: TraceRequest) -> TraceResult:
    """One V1 ``results.persons[i]`` entry: one person and their contacts."""
    if not isinstance(person, dict):
        raise unreadable(f"persons[{i}] is {type(person).__name__}, not an object")

    echo_id = person.get("requestId")
    if echo_id is not None and str(echo_id) != str(req.request_id):
        raise unreadable(f"persons[{i}] echoes requestId {echo_id!r}, expected {req.request_id!r}")
    check_address_echo(f"persons[{i}]", person.get("propertyAddress"), req)

    phones_raw = list_field(f"persons[{i}].phoneNumbers", person.get("phoneNumbers"))
    emails_raw = list_field(f"persons[{i}].emails", person.get("emails"))

    meta = person.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise unreadable(f"persons[{i}].meta is not an object")
    if isinstance(meta, dict) and meta.get("matched") is not None:
        if not isinstance(meta["matched"], bool):
            raise unreadable(f"persons[{i}].meta.matched is {meta['matched']!r}")
        matched = meta["matched"]
    else:
        matched = bool(person.get("_id") or person.get("name") or phones_raw or emails_raw)

    litigator = read_flag(person.get("litigator"))
    persons: tuple[Person, ...] = ()
    phones: tuple[Phone, ...] = ()
    emails: tuple[Email, ...] = ()
    if matched:
        full, first, last = person_name(f"persons[{i}]", person.get("name"))
        deceased = read_flag(person.get("deceased")) or read_flag(person.get("death"))
        persons = (Person(name=full, first=first, last=last, property_owner=None, litigator=litigator,
                          deceased=deceased),)
        phones = merge_phones(parse_phones(f"persons[{i}].phoneNumbers", phones_raw, person=0))
        emails = merge_emails(parse_emails(f"persons[{i}].emails", emails_raw, person=0))

    return TraceResult(
        request_id=req.request_id,
        matched=matched,
        phones=phones,
        emails=emails,
        litigator=litigator,
        raw=person,
        payload_hash=payload_hash(person),
        persons=persons,
    )
