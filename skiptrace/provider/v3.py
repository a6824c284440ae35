"""The V3 parser: one ``result.data[i]`` entry, up to 3 persons, property owners first.
"""

from __future__ import annotations

from typing import Any

from skiptrace.provider import checks, cleaning
from skiptrace.provider.model import Email, Person, Phone, TraceRequest, TraceResult, unreadable


def parse_entry(i: int, entry: Any, req: TraceRequest) -> TraceResult:
    """One V3 ``result.data[i]`` entry: up to 3 persons, property owners first."""
    where = f"data[{i}]"
    if not isinstance(entry, dict):
        raise unreadable(f"{where} is {type(entry).__name__}, not an object")
    echo = entry.get("input")
    if echo is not None and not isinstance(echo, dict):
        raise unreadable(f"{where}.input is not an object")
    echo = echo or {}
    echo_id = echo.get("requestId")
    if echo_id is not None and str(echo_id) != str(req.request_id):
        raise unreadable(f"{where} echoes requestId {echo_id!r}, expected {req.request_id!r}")
    checks.check_address_echo(f"{where}.input", echo.get("propertyAddress"), req)
    prop = entry.get("property")
    if prop is not None and not isinstance(prop, dict):
        raise unreadable(f"{where}.property is not an object")

    persons_raw = checks.list_field(f"{where}.persons", entry.get("persons"))
    meta = entry.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise unreadable(f"{where}.meta is not an object")
    flag = (meta or {}).get("matched")
    if flag is not None and not isinstance(flag, bool):
        raise unreadable(f"{where}.meta.matched is {flag!r}")
    # BatchData bills a matched property with at least one person; that is what "matched" means here.
    matched = (flag if flag is not None else True) and bool(persons_raw)

    people: list[tuple[Person, list, list]] = []
    for j, raw in enumerate(persons_raw):
        pw = f"{where}.persons[{j}]"
        if not isinstance(raw, dict):
            raise unreadable(f"{pw} is {type(raw).__name__}, not an object")
        owner = raw.get("propertyOwner")
        if owner is not None and not isinstance(owner, bool):
            raise unreadable(f"{pw}.propertyOwner is {owner!r}")
        full, first, last = checks.person_name(pw, raw.get("name"))
        people.append((
            Person(name=full, first=first, last=last, property_owner=owner,
                   litigator=cleaning.read_flag(raw.get("litigator")), deceased=cleaning.read_flag(raw.get("deceased"))),
            checks.list_field(f"{pw}.phones", raw.get("phones")),
            checks.list_field(f"{pw}.emails", raw.get("emails")),
        ))
    people.sort(key=lambda p: p[0].property_owner is not True)  # stable: provider order otherwise

    phones: list[Phone] = []
    emails: list[Email] = []
    if matched:
        for n, (_, phones_raw, emails_raw) in enumerate(people):
            phones.extend(cleaning.parse_phones(f"{where}.persons[{n}].phones", phones_raw, person=n, by_rank=True))
            emails.extend(cleaning.parse_emails(f"{where}.persons[{n}].emails", emails_raw, person=n, by_rank=True))
    persons = tuple(p for p, _, _ in people) if matched else ()
    return TraceResult(
        request_id=req.request_id,
        matched=matched,
        phones=cleaning.merge_phones(phones, frozenset(n for n, p in enumerate(persons) if p.litigator or p.deceased)),
        emails=cleaning.merge_emails(emails),
        litigator=any(p.litigator for p in persons),
        raw=entry,
        payload_hash=checks.payload_hash(entry),
        persons=persons,
    )
