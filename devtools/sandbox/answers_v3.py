"""The pure V3 answer (``result.data[]``, up to 3 persons, ranked phones) and the billed 200s the client
cannot read (``unreadable_answer``).
"""

from __future__ import annotations

import copy
import json
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

from devtools.sandbox.answers import (
    _CARRIERS,
    _DOMAINS,
    _FIRST_NAMES,
    _LAST_NAMES,
    _area_code,
    _b62_id,
    _error_body,
    _is_entity,
    _match_key,
    _norm,
    _result_counts,
    _rng,
    _text,
    _zip5,
    answer,
    match_decision,
    validate,
)
from devtools.sandbox.config import V3_API_VERSION, SandboxConfig

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_MIDDLE_INITIALS = "ABCDEFGHJKLMNPRSTW"
_STREET_NAMES = [
    "Maple Ave",
    "Cedar Ln",
    "Pine St",
    "Lakeview Dr",
    "Magnolia Blvd",
    "Willow Ct",
    "Sunset Rd",
    "Harbor Way",
    "Orchard Pl",
    "Ridge Rd",
]
# A few ZIP3 prefixes with their county, so the common demo addresses read right; others get a
# plausible name (or none, as the real API sometimes does).
_COUNTIES_BY_ZIP3 = {
    "335": "Hillsborough",
    "336": "Hillsborough",
    "337": "Pinellas",
    "328": "Orange",
    "331": "Miami-Dade",
    "212": "Baltimore City",
    "770": "Harris",
    "852": "Maricopa",
    "303": "Fulton",
    "606": "Cook",
    "900": "Los Angeles",
}
_COUNTIES = ["Washington", "Jefferson", "Franklin", "Lincoln", "Madison", "Jackson", "Monroe", "Marion"]
_PHONE_TYPE_ORDER = {"Mobile": 0, "VoIP": 1, "Land Line": 2}


def _ulid(*parts: Any) -> str:
    """A 26-character ULID-like id (Crockford base32, first character 0-7), deterministic from the parts."""
    rng = _rng("ulid", *parts)
    return rng.choice("01234567") + "".join(rng.choice(_CROCKFORD) for _ in range(25))


def _full(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _v3_input(request: dict[str, Any]) -> dict[str, Any]:
    """The request echoed: its requestId (when sent), its propertyAddress and its name (when sent)."""
    echo: dict[str, Any] = {}
    if "requestId" in request:
        echo["requestId"] = request["requestId"]
    echo["propertyAddress"] = copy.deepcopy(request["propertyAddress"])
    if isinstance(request.get("name"), dict):
        echo["name"] = copy.deepcopy(request["name"])
    return echo


def _v3_property(pa: dict[str, Any], key: str, config: SandboxConfig, rng: random.Random) -> dict[str, Any]:
    street = _text(pa.get("street")).strip()
    city = _text(pa.get("city")).strip()
    state = _text(pa.get("state")).strip()
    zip5 = _zip5(pa.get("zip"))
    digits = re.sub(r"\D", "", _text(pa.get("zip")))
    plus4 = digits[5:9] if len(digits) == 9 else (f"{rng.randrange(10000):04d}" if rng.random() < 0.8 else "")
    county = _COUNTIES_BY_ZIP3.get(zip5[:3]) or (rng.choice(_COUNTIES) if rng.random() < 0.85 else "")
    address: dict[str, Any] = {"street": street, "city": city, "state": state, "zip": zip5}
    if plus4:
        address["zipPlus4"] = plus4
    if county:
        address["county"] = county
    address["fullAddress"] = ", ".join(p for p in (street, city, _full(state, zip5)) if p)
    if rng.random() < 0.65:
        mailing = {"street": street, "city": city, "state": state, "zip": zip5}
    else:
        mailing = {"street": f"PO Box {rng.randint(100, 99999)}", "city": city, "state": state, "zip": zip5}
    id_rng = _rng(config.seed, "v3-property", key)
    return {
        "id": str(uuid.UUID(int=id_rng.getrandbits(128), version=4)),
        "address": address,
        "mailingAddress": mailing,
        "owners": [],  # filled by the caller once the persons are known
    }


def _v3_phones(rng: random.Random, area: str, used: set[str], at_least_one: bool) -> list[dict[str, Any]]:
    """Ranked phones (1 = best); every flag present. ``at_least_one``: rank 1 is a callable mobile."""
    count = rng.choices([0, 1, 2, 3, 4], weights=[15, 25, 25, 20, 15])[0]
    if at_least_one:
        count = max(count, 1)
    scored: list[tuple[int, dict[str, Any]]] = []
    for i in range(count):
        number = f"{area}555{rng.randrange(10000):04d}"
        while number in used:  # distinct within one entry (the persons of a household)
            number = f"{area}555{rng.randrange(10000):04d}"
        used.add(number)
        guaranteed = at_least_one and i == 0
        kind = "Mobile" if guaranteed else rng.choices(["Mobile", "Land Line", "VoIP"], [55, 35, 10])[0]
        reachable = guaranteed or rng.random() < 0.8
        phone = {
            "rank": 0,
            "number": number,
            "type": kind,
            "carrier": rng.choice(_CARRIERS[kind]),
            "tested": reachable or rng.random() < 0.5,
            "reachable": reachable,
            "dnc": False if guaranteed else rng.random() < 0.2,
            "tcpa": False if guaranteed else rng.random() < 0.08,
        }
        score = rng.randint(55, 99) if kind == "Mobile" else rng.randint(10, 80)
        if not reachable:
            score -= 40
        scored.append((101 if guaranteed else score, phone))
    scored.sort(key=lambda sp: (-sp[0], _PHONE_TYPE_ORDER[sp[1]["type"]]))
    phones = [phone for _, phone in scored]
    for rank, phone in enumerate(phones, 1):
        phone["rank"] = rank
    return phones


def _v3_emails(
    rng: random.Random, first: str, last: str, used: set[str], at_least_one: bool
) -> list[dict[str, Any]]:
    count = rng.choices([0, 1, 2, 3], weights=[25, 40, 25, 10])[0]
    if at_least_one:
        count = max(count, 1)
    f = re.sub(r"[^a-z]", "", first.lower()) or "owner"
    la = re.sub(r"[^a-z]", "", last.lower()) or "home"
    locals_ = [f"{f}.{la}", f"{f[0]}.{la}", f"{f}{la}{rng.randint(1, 99)}", f"{la}.{f[0]}"]
    rng.shuffle(locals_)
    emails: list[dict[str, Any]] = []
    for local in locals_:
        if len(emails) == count:
            break
        address = f"{local}@{rng.choice(_DOMAINS)}"
        if address in used:
            continue
        used.add(address)
        emails.append({"rank": len(emails) + 1, "email": address, "tested": rng.random() < 0.7})
    return emails


def _v3_address(rng: random.Random, pa: dict[str, Any]) -> dict[str, str]:
    """Another address in the same city (a relative's home, an owner's prior address)."""
    return {
        "street": f"{rng.randint(100, 9899)} {rng.choice(_STREET_NAMES)}",
        "city": _text(pa.get("city")).strip(),
        "state": _text(pa.get("state")).strip(),
        "zip": _zip5(pa.get("zip")),
    }


def _v3_dob(rng: random.Random, oldest: int = 1938, youngest: int = 1996) -> str | None:
    if rng.random() < 0.15:
        return None
    return f"{rng.randint(oldest, youngest)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _v3_entry(request: dict[str, Any], config: SandboxConfig) -> dict[str, Any]:
    """One ``result.data`` entry: the same match decision as V1, then 0 to 3 persons."""
    entry: dict[str, Any] = {"input": _v3_input(request)}
    matched, reason = match_decision(request, config)
    if not matched:
        entry["persons"] = []
        entry["meta"] = {"matched": False, "error": False}
        return entry

    pa = request["propertyAddress"]
    name = request.get("name") if isinstance(request.get("name"), dict) else {}
    key = _match_key(pa, name, _norm(pa.get("street")))
    rng = _rng(config.seed, "v3", key)
    prop = _v3_property(pa, key, config, rng)

    forced = reason in ("alwaysmatch_marker", "litigator_marker", "deceased_marker", "family_marker")
    count = rng.choices([0, 1, 2, 3], weights=[6, 54, 28, 12])[0]
    if reason == "family_marker":
        count = 3
    elif forced:
        count = max(count, 1)

    sent_first, sent_last = _text(name.get("first")).strip(), _text(name.get("last")).strip()
    if sent_first and sent_last and not _is_entity(name):
        owner_first, owner_last = sent_first, sent_last
    else:  # no person sent (or an entity, or half a name): the provider knows the owner
        owner_first, owner_last = rng.choice(_FIRST_NAMES).title(), rng.choice(_LAST_NAMES).title()

    area = _area_code(pa.get("zip"), rng)
    used_phones: set[str] = set()
    used_emails: set[str] = set()
    persons: list[dict[str, Any]] = []
    for i in range(count):
        if i == 0:
            first, last, owner = owner_first, owner_last, True
        else:
            # A co-owner (same last name) or a relative who does not own the property.
            co_owner = i == 1 and (reason == "family_marker" or rng.random() < 0.6)
            taken = {p["name"]["first"].upper() for p in persons}
            first = rng.choice([n for n in _FIRST_NAMES if n not in taken]).title()
            last = owner_last if co_owner or rng.random() < 0.7 else rng.choice(_LAST_NAMES).title()
            owner = co_owner
        # The marker's owner: ALWAYSMATCH is clean and callable, LITIGATOR a litigator WITH a callable
        # phone, DECEASEDMATCH deceased. Everyone else is sometimes a litigator, sometimes deceased.
        guaranteed = i == 0 and reason in ("alwaysmatch_marker", "litigator_marker")
        if i == 0 and reason in ("alwaysmatch_marker", "litigator_marker", "deceased_marker"):
            litigator = reason == "litigator_marker"
            deceased = reason == "deceased_marker"
        else:
            litigator = rng.random() < 0.04
            deceased = rng.random() < 0.04
        middle = rng.choice(_MIDDLE_INITIALS) if rng.random() < 0.5 else ""
        person_name: dict[str, Any] = {"first": first}
        if middle:
            person_name["middle"] = middle
        person_name.update({"last": last, "full": _full(first, middle, last)})
        if owner:
            addresses = [{k: prop["address"][k] for k in ("street", "city", "state", "zip")}]
            if rng.random() < 0.3:
                addresses.append(_v3_address(rng, pa))
        else:
            addresses = [_v3_address(rng, pa)]
        person: dict[str, Any] = {
            "propertyOwner": owner,
            "name": person_name,
            "phones": _v3_phones(rng, area, used_phones, at_least_one=guaranteed),
            "emails": _v3_emails(rng, first, last, used_emails, at_least_one=guaranteed),
            "addresses": addresses,
            "litigator": litigator,
            "deceased": deceased,
        }
        dob = _v3_dob(rng, youngest=1990 if owner else 2004)
        if dob is not None:
            person["dob"] = dob
        persons.append(person)

    owner_names = [(p["name"]["first"], p["name"]["last"]) for p in persons if p["propertyOwner"]]
    prop["owners"] = [
        {"name": {"first": f, "last": la, "full": _full(f, la)}}
        for f, la in owner_names or [(owner_first, owner_last)]
    ]
    entry["property"] = prop
    entry["persons"] = persons
    entry["meta"] = {"matched": True, "error": False}
    return entry


def answer_v3(body: Any, config: SandboxConfig) -> tuple[int, dict[str, Any]]:
    """The sandbox's V3 answer to a skip-trace request body: ``(status code, JSON body)``.

    Pure and deterministic like :func:`answer`; the same request body as V1 (``options`` accepted and
    ignored: V3 keeps TCPA-flagged phones). ``matchCount`` counts entries matched with at least one
    person, plus ``match_count_extra`` (capped at the request count).
    """
    problem = validate(body)
    if problem:
        return 400, _error_body(400, problem)
    data = [_v3_entry(r, config) for r in body["requests"]]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return 200, {
        "status": {"code": 200, "text": "OK"},
        "result": {
            "data": data,
            "meta": {
                "apiVersion": V3_API_VERSION,
                "results": _result_counts(len(data), _true_matches(data, "v3"), config),
                "requestId": _ulid(config.seed, "call-v3", canonical),
            },
        },
    }


ANSWERS: dict[str, Callable[[Any, SandboxConfig], tuple[int, dict[str, Any]]]] = {
    "v1": answer,
    "v3": answer_v3,
}


def _entries(payload: dict[str, Any], version: str) -> list[dict[str, Any]]:
    return payload["results"]["persons"] if version == "v1" else payload["result"]["data"]


def _true_matches(entries: list[dict[str, Any]], version: str) -> int:
    """Matches before ``match_count_extra``: V1 matched persons; V3 matched entries with a person."""
    if version == "v1":
        return sum(1 for p in entries if p["meta"]["matched"])
    return sum(1 for e in entries if e["meta"]["matched"] and e["persons"])


def _match_count(payload: dict[str, Any], version: str) -> int:
    return (payload["results"] if version == "v1" else payload["result"])["meta"]["results"]["matchCount"]


def _foreign_request_id(sent: list[Any], seed: int) -> str:
    taken = {_text(r.get("requestId")) for r in sent if isinstance(r, dict)}
    candidate = "SBX-FOREIGN-" + _b62_id(8, seed, "foreign", sorted(taken))
    while candidate in taken:
        candidate += "X"
    return candidate


def unreadable_answer(
    payload: dict[str, Any], version: str, kind: str, body: dict[str, Any], seed: int = 7
) -> tuple[dict[str, Any] | None, bytes | None]:
    """Mangle a 200 answer into ``kind`` (one of :data:`UNREADABLE_KINDS`): ``(JSON payload, None)`` or,
    for ``not_json``, ``(None, raw bytes)``. The JSON kinds leave ``meta.results`` untouched."""
    if kind == "not_json":
        data = json.dumps(payload).encode()
        return None, data[: len(data) // 2]
    payload = copy.deepcopy(payload)
    container = payload["results"] if version == "v1" else payload["result"]
    list_key = "persons" if version == "v1" else "data"
    entries = container[list_key]
    if kind == "no_list":
        del container[list_key]
    elif kind == "short_list":
        container[list_key] = entries[:-1]
    elif kind == "foreign_request_id":
        foreign = _foreign_request_id(body["requests"], seed)
        if version == "v1":
            entries[-1]["requestId"] = foreign
        else:
            entries[-1]["input"]["requestId"] = foreign
    elif kind == "wrong_type":
        if version == "v1":
            target = next((p for p in entries if p["meta"]["matched"]), None)
            if target is not None:
                target["phoneNumbers"] = ",".join(ph["number"] for ph in target["phoneNumbers"])
            else:
                entries[0]["meta"] = "unmatched"
        else:
            target = next((e for e in entries if e["persons"]), None)
            if target is not None:
                first = target["persons"][0]
                first["phones"] = ",".join(ph["number"] for ph in first["phones"])
            else:
                entries[0]["persons"] = "none"
    else:
        raise ValueError(f"unknown unreadable kind {kind!r}")
    return payload, None
