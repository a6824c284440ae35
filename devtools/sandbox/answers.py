"""The pure V1 answer: whether an input matches, and the person, phones and emails it gets, all a
function of the request and ``SandboxConfig``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from devtools.sandbox.config import _STATUS_TEXT, MAX_REQUESTS_PER_CALL, SandboxConfig


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def item_key(request: Any) -> str:
    """The stats key of one request item: ``STREET|CITY|STATE|ZIP|FIRST|LAST``, stripped and uppercased."""
    if not isinstance(request, dict):
        return "|||||"
    pa = request.get("propertyAddress") if isinstance(request.get("propertyAddress"), dict) else {}
    name = request.get("name") if isinstance(request.get("name"), dict) else {}
    parts = [
        pa.get("street"),
        pa.get("city"),
        pa.get("state"),
        pa.get("zip"),
        name.get("first"),
        name.get("last"),
    ]
    return "|".join(_text(p).strip().upper() for p in parts)


def _norm(value: Any) -> str:
    """Match-key normalization: uppercase, commas and periods dropped, whitespace collapsed."""
    return " ".join(_text(value).upper().replace(",", " ").replace(".", " ").split())


# A unit designator after the street: "APT 3", "STE. 200", "UNIT #4B", "FL 2", "# 12", "LOT 7".
# The identifier must hold a digit or be a single letter, so "PARKING LOT RD" is not a unit.
_UNIT_ID = r"(?:[A-Z]?\d[A-Z0-9-]*|[A-Z])(?![A-Z0-9])"
_UNIT_RE = re.compile(
    r"(?:\s+(?:APT|UNIT|STE|SUITE|FL|BLDG|LOT|RM)\s*#?\s*" + _UNIT_ID + r"|\s*#\s*" + _UNIT_ID + r")"
)
_HOUSE_NUMBER_RE = re.compile(r"^\s*(\d+)")
_ENTITY_RE = re.compile(
    r"\b(LLC|INC|CORP|CORPORATION|CO|COMPANY|LP|LLP|LTD|TRUST|TR|ESTATE|HOLDINGS|PROPERTIES|"
    r"INVESTMENTS|PARTNERS|BANK|ASSOCIATION|ASSN|CHURCH|CITY OF|COUNTY)\b"
)


def strip_unit(street: Any) -> str:
    """The normalized street without its unit designators (what a sanitized retry would send)."""
    normalized = _norm(street)
    return _norm(_UNIT_RE.sub(" ", normalized))


def has_unit(street: Any) -> bool:
    return strip_unit(street) != _norm(street)


def _unit(*parts: Any) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256("\x1f".join(_text(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _rng(*parts: Any) -> random.Random:
    digest = hashlib.sha256("\x1f".join(_text(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _b62_id(length: int, *parts: Any) -> str:
    rng = _rng("id", *parts)
    return "".join(rng.choice(_B62) for _ in range(length))


def _zip5(value: Any) -> str:
    digits = re.sub(r"\D", "", _text(value))
    return digits[:5] if len(digits) >= 5 else _norm(value)


def _match_key(pa: dict[str, Any], name: dict[str, Any], street: str) -> str:
    """What the match decision and the invented contacts hang on (ZIP+4 counts as its ZIP)."""
    return "|".join(
        [
            street,
            _norm(pa.get("city")),
            _norm(pa.get("state")),
            _zip5(pa.get("zip")),
            _norm(name.get("first")),
            _norm(name.get("last")),
        ]
    )


def match_decision(request: dict[str, Any], config: SandboxConfig) -> tuple[bool, str]:
    """Whether a (valid) request item matches, and why: a short reason string for debugging.

    Units that only match without the unit: when the street carries a unit designator and the same
    address without it matches, the unit form is refused for about half of such inputs overall
    (deterministic), so a sanitized retry of those finds contacts.
    """
    pa = request["propertyAddress"]
    name = request.get("name") if isinstance(request.get("name"), dict) else {}
    street = _norm(pa.get("street"))
    if "NOMATCH" in street:
        return False, "nomatch_marker"
    if "ALWAYSMATCH" in street:
        return True, "alwaysmatch_marker"
    if "LITIGATOR" in street:
        return True, "litigator_marker"
    if "DECEASEDMATCH" in street:
        return True, "deceased_marker"
    if "FAMILYMATCH" in street:
        return True, "family_marker"
    rate = config.match_rate
    base = strip_unit(street)
    if base != street:
        base_matched = _unit(config.seed, "match", _match_key(pa, name, base)) < rate
        # Among inputs whose unit-less form matches, refuse with probability 0.5/rate, so that about
        # half of all unit inputs are "only match without the unit" (all of them when rate <= 0.5).
        refuse_p = min(1.0, 0.5 / rate) if rate > 0 else 0.0
        if base_matched and _unit(config.seed, "unit", _match_key(pa, name, street)) < refuse_p:
            return False, "unit_only_matches_without_unit"
    matched = _unit(config.seed, "match", _match_key(pa, name, street)) < rate
    return matched, "hash"


def _is_entity(name: dict[str, Any]) -> bool:
    return bool(_ENTITY_RE.search(_norm(name.get("first")) + " " + _norm(name.get("last"))))


_FIRST_NAMES = [
    "JAMES",
    "MARIA",
    "ROBERT",
    "LINDA",
    "MICHAEL",
    "PATRICIA",
    "DAVID",
    "JENNIFER",
    "CARLOS",
    "SUSAN",
    "KEVIN",
    "ANGELA",
    "BRIAN",
    "NANCY",
    "TERRENCE",
    "GLORIA",
    "HAROLD",
    "DENISE",
]
_LAST_NAMES = [
    "SMITH",
    "JOHNSON",
    "WILLIAMS",
    "BROWN",
    "GARCIA",
    "MILLER",
    "DAVIS",
    "RODRIGUEZ",
    "MARTINEZ",
    "NGUYEN",
    "KIM",
    "PATEL",
    "THOMPSON",
    "WHITE",
    "LOPEZ",
    "CLARK",
    "LEWIS",
    "WALKER",
]
_CARRIERS = {
    "Mobile": ["T-Mobile", "Verizon", "AT&T", "Cricket"],
    "Land Line": ["Frontier", "CenturyLink", "AT&T", "Windstream"],
    "VoIP": ["Bandwidth", "Twilio", "Google Voice"],
}
_DOMAINS = ["example.com", "example.net", "example.org"]


def _area_code(zip_code: Any, rng: random.Random) -> str:
    digits = re.sub(r"\D", "", _text(zip_code))[:5]
    value = int(digits) if digits else rng.randrange(100000)
    code = 200 + (value * 7919) % 790  # 200..989
    if code % 100 == 11 or code % 100 == 0:  # no N11 service codes, no x00
        code += 1
    return f"{code:03d}"


def _phones(rng: random.Random, zip_code: Any, at_least_one: bool) -> list[dict[str, Any]]:
    count = rng.choices([0, 1, 2, 3, 4], weights=[15, 25, 25, 20, 15])[0]
    if at_least_one:
        count = max(count, 1)
    area = _area_code(zip_code, rng)
    lines = rng.sample(range(10000), count)
    phones: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        kind = (
            "Mobile"
            if at_least_one and i == 0
            else rng.choices(["Mobile", "Land Line", "VoIP"], [55, 35, 10])[0]
        )
        reachable = rng.random() < 0.8
        phone: dict[str, Any] = {
            "number": f"{area}555{line:04d}",
            "carrier": rng.choice(_CARRIERS[kind]),
            "type": kind,
            "tested": reachable or rng.random() < 0.5,
            "reachable": reachable,
            "score": rng.randint(55, 99) if kind == "Mobile" else rng.randint(10, 80),
            "dnc": rng.random() < 0.2,
            "tcpa": rng.random() < 0.08,
        }
        if at_least_one and i == 0:  # the guaranteed phone of ALWAYSMATCH is callable
            phone["dnc"] = phone["tcpa"] = False
        elif rng.random() < 0.1:
            del phone["dnc"]  # the real API sometimes leaves the flag out
        if not (at_least_one and i == 0) and rng.random() < 0.1:
            del phone["score"]
        phones.append(phone)
    # Mobiles first (stable, so the provider's own order holds within a type).
    phones.sort(key=lambda p: p["type"] != "Mobile")
    return phones


def _emails(rng: random.Random, first: str, last: str, at_least_one: bool) -> list[dict[str, str]]:
    count = rng.choices([0, 1, 2, 3], weights=[25, 40, 25, 10])[0]
    if at_least_one:
        count = max(count, 1)
    f = re.sub(r"[^a-z]", "", first.lower()) or "owner"
    la = re.sub(r"[^a-z]", "", last.lower()) or "home"
    locals_ = [f"{f}.{la}", f"{f[0]}{la}", f"{f}{la}{rng.randint(1, 99)}", f"{la}.{f[0]}"]
    rng.shuffle(locals_)
    emails: list[dict[str, str]] = []
    for i in range(count):
        address = f"{locals_[i]}@{_DOMAINS[rng.randrange(len(_DOMAINS))]}"
        key = "address" if rng.random() < 0.08 else "email"  # some clients have seen `address`
        emails.append({key: address})
    return emails


def _address_echo(pa: dict[str, Any]) -> dict[str, Any]:
    echo = {k: pa[k] for k in ("street", "city", "state", "zip") if k in pa}
    found = _HOUSE_NUMBER_RE.match(_text(pa.get("street")))
    if found:
        echo = {"houseNumber": found.group(1), **echo}
    return echo


def _person(request: dict[str, Any], config: SandboxConfig, include_tcpa: bool) -> dict[str, Any]:
    pa = request["propertyAddress"]
    name = request.get("name") if isinstance(request.get("name"), dict) else {}
    matched, reason = match_decision(request, config)
    person: dict[str, Any] = {}
    if "requestId" in request:
        person["requestId"] = request["requestId"]
    if not matched:
        person["propertyAddress"] = _address_echo(pa)
        person["meta"] = {"matched": False, "error": False}
        return person

    key = _match_key(pa, name, _norm(pa.get("street")))
    rng = _rng(config.seed, "person", key)
    always = reason == "alwaysmatch_marker"
    if (name.get("first") or name.get("last")) and not _is_entity(name):
        first, last = _text(name.get("first")), _text(name.get("last"))
    else:  # no person sent (or an entity): the provider picks the owner
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    litigator = reason == "litigator_marker" or (not always and rng.random() < 0.03)
    phones = [] if litigator else _phones(rng, pa.get("zip"), at_least_one=always)
    if not include_tcpa:  # without includeTCPABlacklistedPhones the provider silently drops them
        phones = [p for p in phones if not p.get("tcpa")]
    person.update(
        {
            "_id": _b62_id(13, config.seed, "person", key),
            "name": {"first": first, "last": last},
            "phoneNumbers": phones,
            "emails": _emails(rng, first or "owner", last or "home", at_least_one=always),
            "litigator": litigator,
            "dnc": {"tcpa": litigator},
            "death": {},
            "bankruptcy": {},
            "involuntaryLien": [],
            "propertyAddress": _address_echo(pa),
            "meta": {"matched": True, "error": False},
        }
    )
    return person


def _error_body(code: int, text: str | None = None) -> dict[str, Any]:
    return {"status": {"code": code, "text": text or _STATUS_TEXT.get(code, "Error")}}


def validate(body: Any) -> str | None:
    """Why a request body would be refused with 400, or None when it is acceptable."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        return "The requests field is required"
    if len(requests) > MAX_REQUESTS_PER_CALL:
        return f"The requests field must contain at most {MAX_REQUESTS_PER_CALL} items"
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            return f"requests[{i}] must be an object"
        pa = request.get("propertyAddress")
        if not isinstance(pa, dict):
            return f"requests[{i}].propertyAddress is required"
        street = pa.get("street")
        if not isinstance(street, str) or not street.strip():
            return f"requests[{i}].propertyAddress.street is required"
        if "name" in request and request["name"] is not None and not isinstance(request["name"], dict):
            return f"requests[{i}].name must be an object"
    options = body.get("options")
    if options is not None and not isinstance(options, dict):
        return "The options field must be an object"
    return None


def answer(body: Any, config: SandboxConfig) -> tuple[int, dict[str, Any]]:
    """The sandbox's answer to a skip-trace request body: ``(status code, JSON body)``.

    Pure and deterministic (content + ``config.seed`` + ``config.match_rate``): no latency, no auth,
    no faults — the server applies those around it.
    """
    problem = validate(body)
    if problem:
        return 400, _error_body(400, problem)
    options = body.get("options") or {}
    include_tcpa = bool(options.get("includeTCPABlacklistedPhones"))
    persons = [_person(r, config, include_tcpa) for r in body["requests"]]
    matches = sum(1 for p in persons if p["meta"]["matched"])
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return 200, {
        "status": {"code": 200, "text": "OK"},
        "results": {
            "persons": persons,
            "meta": {
                "apiVersion": "2.10.2-sandbox",
                "results": _result_counts(len(persons), matches, config),
                "requestId": _b62_id(15, config.seed, "call", canonical),
            },
        },
    }


def _result_counts(request_count: int, matches: int, config: SandboxConfig) -> dict[str, int]:
    """``meta.results``: ``matchCount`` is the matches plus ``match_count_extra``, never above the requests."""
    billed = min(request_count, matches + max(0, config.match_count_extra))
    return {
        "requestCount": request_count,
        "matchCount": billed,
        "noMatchCount": request_count - billed,
        "errorCount": 0,
    }


# -- V3 -----------------------------------------------------------------------------------------------
