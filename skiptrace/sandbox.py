"""A local simulator of the BatchData property skip-trace endpoint, V1 and V3.

Used by ``make demo``, end-to-end tests, crash tests and benchmarks. Product code never imports this
module: it reaches the sandbox only through ``BATCHDATA_BASE_URL``. Standard library only (no Django),
so it can also run as ``python -m skiptrace.sandbox --port 8787``.

Everything an answer contains is a pure function of the request content and ``SandboxConfig`` (see
:func:`answer` and :func:`answer_v3`), so a re-run of the same input gets the same matches, persons,
phones and emails. V1 and V3 share the decision of whether an input matches (:func:`match_decision`).

Routes:

- ``POST /api/v1/property/skip-trace`` — V1: ``results.persons[]``, one person per request, TCPA-flagged
  phones dropped unless ``options.includeTCPABlacklistedPhones``.
- ``POST /api/v3/property/skip-trace`` — V3: ``result.data[]``, one entry per request with ``input`` (the
  request echoed), ``property`` (when matched), ``persons`` (0 to 3, phones ranked, TCPA-flagged phones
  kept) and ``meta``; ``result.meta.results.matchCount`` counts entries matched with at least one person
  (what the provider bills). ``options`` is accepted and ignored.
- (other methods on either endpoint → 405.)
- ``GET /_sandbox/stats`` — :meth:`SandboxStats.snapshot`, including what the provider would have billed
  (``billed_matches``: the ``matchCount`` of every 2xx answer, unreadable ones included).
- ``POST /_sandbox/reset`` — reset the stats (and re-seed the ``error_rate`` / ``unreadable_rate``
  generators and the unreadable-kind rotation).
- ``GET|POST /_sandbox/config`` — read / update :class:`SandboxConfig` fields from a JSON object, so an
  out-of-process test can inject faults.
- anything else → 404 JSON.

Street markers (uppercased, anywhere in the street): ``NOMATCH`` never matches; ``ALWAYSMATCH`` always
matches with a callable mobile and an email; ``LITIGATOR`` matches with a litigator owner (V1: without
phones; V3: with phones); ``DECEASEDMATCH`` matches with a deceased owner (V3); ``FAMILYMATCH`` matches
with three persons in V3 (owner, co-owner, non-owner relative).

Faults (``SandboxConfig.fault``, every request): ``500``/``429``/``401``/``402`` answer that status,
``403_balance`` answers V3's out-of-credits 403 ``Insufficient balance``, ``timeout`` hangs ``hang_s``,
``reset`` drops the connection, and ``malformed`` (not JSON), ``drift`` (the list renamed) and ``short``
(one entry fewer) answer a billed 200 the client cannot map. ``unreadable_rate`` answers that fraction of
requests with such a billed 200, rotating through :data:`UNREADABLE_KINDS`; ``match_count_extra`` raises
every 200's ``matchCount`` above the per-person matches (capped at the request count).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import ipaddress
import json
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SKIPTRACE_PATH = "/api/v1/property/skip-trace"
SKIPTRACE_PATH_V3 = "/api/v3/property/skip-trace"
SKIPTRACE_PATHS = {SKIPTRACE_PATH: "v1", SKIPTRACE_PATH_V3: "v3"}  # path -> API version
V3_API_VERSION = "3.0.4"
MAX_REQUESTS_PER_CALL = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
FAULTS = ("500", "429", "401", "402", "403_balance", "timeout", "reset", "malformed", "drift", "short")
# What an ``unreadable_rate`` answer looks like, in rotation order: a 200 the client cannot map completely.
# Every kind but not_json keeps ``meta.results.matchCount`` readable, so the call can still be costed.
UNREADABLE_KINDS = (
    "not_json",  # the body is cut in half: not JSON at all
    "no_list",  # results.persons (V1) / result.data (V3) is missing
    "short_list",  # the list is one entry short
    "foreign_request_id",  # one entry echoes a requestId that was not sent
    "wrong_type",  # a field of the wrong type: a matched person's phones as a string
)

_STATUS_TEXT = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class SandboxConfig:
    """How the sandbox behaves. Mutable at runtime: a request reads it once when it arrives."""

    latency_s: float = 0.0  # sleep per skip-trace request (provider latency)
    error_rate: float = 0.0  # fraction of requests answered with error_status (seeded, deterministic)
    error_status: int = 500
    fault: str | None = None  # forced mode for every request, one of FAULTS
    hang_s: float = 30.0  # how long fault="timeout" waits before answering normally
    retry_after: int | None = None  # Retry-After header on every 429
    token: str | None = None  # exact bearer token required; None = any non-empty bearer token
    match_rate: float = 0.7  # deterministic per normalized input
    seed: int = 7
    accept_x_api_key: bool = False  # also accept the token in an `X-API-Key` header
    # Fraction of would-be 200 answers replaced by a billed 200 the client cannot map (seeded,
    # deterministic like error_rate, from its own generator), rotating through unreadable_kinds.
    unreadable_rate: float = 0.0
    unreadable_kinds: list[str] | None = None  # the rotation; None = all of UNREADABLE_KINDS in order
    # Added to matchCount of every 200 answer (V1 and V3), capped at requestCount; noMatchCount follows.
    match_count_extra: int = 0

    def __post_init__(self) -> None:
        if self.fault is not None and str(self.fault) not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS} or None, not {self.fault!r}")
        if self.fault is not None:
            self.fault = str(self.fault)
        for name in ("unreadable_rate", "unreadable_kinds", "match_count_extra"):
            setattr(self, name, _coerce_config_value(name, getattr(self, name)))


_FLOAT_FIELDS = {"latency_s", "error_rate", "hang_s", "match_rate", "unreadable_rate"}
_RATE_FIELDS = {"error_rate", "match_rate", "unreadable_rate"}
_INT_FIELDS = {"error_status", "seed", "match_count_extra"}


def _coerce_config_value(name: str, value: Any) -> Any:
    """Validate one field of a ``/_sandbox/config`` update; raises ValueError with a readable text."""
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number")
        if name in _RATE_FIELDS and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return float(value)
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        if name == "error_status" and not 100 <= value <= 599:
            raise ValueError("error_status must be an HTTP status code")
        if name == "match_count_extra" and value < 0:
            raise ValueError("match_count_extra must be a non-negative integer")
        return value
    if name == "unreadable_kinds":
        if value is None or value == "" or value == []:
            return None
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError(
                "unreadable_kinds must be a list of kind names, a comma-separated string or null"
            )
        unknown = [v for v in value if v not in UNREADABLE_KINDS]
        if unknown:
            raise ValueError(
                f"unknown unreadable kind(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(UNREADABLE_KINDS)}"
            )
        return list(value)
    if name == "fault":
        if value is None or value == "" or str(value).lower() == "none":
            return None
        if str(value) not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)} or null")
        return str(value)
    if name == "retry_after":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("retry_after must be a non-negative integer or null")
        return value
    if name == "token":
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValueError("token must be a string or null")
        return value
    if name == "accept_x_api_key":
        if not isinstance(value, bool):
            raise ValueError("accept_x_api_key must be a boolean")
        return value
    raise ValueError(f"unknown config field {name!r}")


# --------------------------------------------------------------------------------------------------
# Stats


class SandboxStats:
    """What the sandbox has seen and what the provider would have billed. Every method takes the lock.

    ``billed_matches`` is the sum of ``matchCount`` over every 2xx skip-trace answer: the readable ones,
    the unreadable ones (``unreadable_rate``, faults ``malformed``/``drift``/``short``: the count of the
    answer that was mangled, so also for a body that is not JSON) and ``match_count_extra`` included.
    ``matched_items`` is the same without ``match_count_extra`` (the per-person matches).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()
        self.max_concurrent = 0
        self.current_concurrent = 0

    def _clear(self) -> None:
        self.requests = 0
        self.items = 0
        self.request_times: list[float] = []
        self.item_keys: Counter[str] = Counter()
        self.requests_by_version: Counter[str] = Counter()
        self.status_counts: Counter[str] = Counter()
        self.billed_answers = 0
        self.billed_matches = 0
        self.billed_by_version: Counter[str] = Counter()
        self.matched_items = 0
        self.unreadable_kinds: Counter[str] = Counter()

    def arrive(self, at: float, keys: list[str], version: str = "v1") -> None:
        """Count one skip-trace POST (whatever it will be answered) and mark it in progress."""
        with self._lock:
            self.requests += 1
            self.items += len(keys)
            self.request_times.append(at)
            self.item_keys.update(keys)
            self.requests_by_version[version] += 1
            self.current_concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.current_concurrent)

    def answered(
        self, version: str, code: int, billed: int = 0, matched: int = 0, unreadable: str | None = None
    ) -> None:
        """Count one answer about to be sent: its status and, for a 2xx, its bill."""
        with self._lock:
            self.status_counts[str(code)] += 1
            if 200 <= code < 300:
                self.billed_answers += 1
                self.billed_matches += billed
                self.billed_by_version[version] += billed
                self.matched_items += matched
                if unreadable is not None:
                    self.unreadable_kinds[unreadable] += 1

    def leave(self) -> None:
        with self._lock:
            self.current_concurrent -= 1

    def reset(self) -> None:
        """Forget history. Requests still in progress stay counted in ``current_concurrent``."""
        with self._lock:
            self._clear()
            self.max_concurrent = self.current_concurrent

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            times = list(self.request_times)
            return {
                "requests": self.requests,
                "items": self.items,
                "max_concurrent": self.max_concurrent,
                "current_concurrent": self.current_concurrent,
                "item_keys": dict(self.item_keys),
                "max_item_key_count": max(self.item_keys.values(), default=0),
                "request_times": times,
                "max_in_any_1s_window": max_in_window(times, 1.0),
                "v1_requests": self.requests_by_version["v1"],
                "v3_requests": self.requests_by_version["v3"],
                "status_counts": dict(self.status_counts),
                "billed_answers": self.billed_answers,
                "billed_matches": self.billed_matches,
                "billed_matches_v1": self.billed_by_version["v1"],
                "billed_matches_v3": self.billed_by_version["v3"],
                "matched_items": self.matched_items,
                "unreadable_answers": sum(self.unreadable_kinds.values()),
                "unreadable_kinds": dict(self.unreadable_kinds),
            }


def max_in_window(times: list[float], window_s: float) -> int:
    """The most timestamps that fall in any half-open interval ``[t, t + window_s)``."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        best = max(best, end - start + 1)
    return best


# --------------------------------------------------------------------------------------------------
# The pure answer


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


# --------------------------------------------------------------------------------------------------
# The HTTP server


@dataclass
class _Reply:
    code: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    billed: int = 0  # the matchCount of a 2xx answer (what the provider bills), readable or not
    matched: int = 0  # the same without match_count_extra
    unreadable: str | None = None  # the unreadable kind or fault of a 2xx the client cannot map


class _CloseWithoutAnswer(Exception):
    """Abort the exchange: the connection is dropped without a response."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BatchDataSandbox/1.0"
    sys_version = ""
    server: _HTTPServer

    # -- plumbing ----------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log = self.server.sandbox.log
        if log is not None:
            log(f"{self.address_string()} {format % args}")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY_BYTES:
                    raise _CloseWithoutAnswer
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            raise _CloseWithoutAnswer
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self, code: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    @staticmethod
    def _error_reply(code: int, config: SandboxConfig) -> _Reply:
        headers = {}
        if code == 429 and config.retry_after is not None:
            headers["Retry-After"] = str(config.retry_after)
        payload = _error_body(code)
        if code == 402:
            payload["message"] = "Insufficient credits"
        elif code == 403:  # V3 out of credits
            payload = _error_body(403, "Insufficient balance")
        return _Reply(code, payload, headers)

    def _reset_connection(self) -> None:
        """Drop the connection with a TCP RST, the way a crashed or overloaded proxy would."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        raise _CloseWithoutAnswer

    def _dispatch(self, handler: Callable[[], None]) -> None:
        try:
            handler()
        except _CloseWithoutAnswer:
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass
        except (TimeoutError, ConnectionError, BrokenPipeError):
            self.close_connection = True

    # -- routes ------------------------------------------------------------------------------------

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(self._post)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(self._get)

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch(self._other)

    def _path(self) -> str:
        return self.path.split("?", 1)[0].rstrip("/") or "/"

    def _other(self) -> None:
        self._read_body()
        if self._path() in SKIPTRACE_PATHS:
            self._send(405, _error_body(405), {"Allow": "POST"})
        else:
            self._send(404, _error_body(404))

    def _get(self) -> None:
        path = self._path()
        sandbox = self.server.sandbox
        if path == "/_sandbox/stats":
            self._send(200, sandbox.stats.snapshot())
        elif path == "/_sandbox/config":
            self._send(200, dataclasses.asdict(sandbox.config))
        elif path in SKIPTRACE_PATHS:
            self._send(405, _error_body(405), {"Allow": "POST"})
        else:
            self._send(404, _error_body(404))

    def _post(self) -> None:
        path = self._path()
        if path in SKIPTRACE_PATHS:
            self._skiptrace(SKIPTRACE_PATHS[path])
            return
        raw = self._read_body()
        sandbox = self.server.sandbox
        if path == "/_sandbox/reset":
            sandbox.reset()
            self._send(200, {"ok": True})
        elif path == "/_sandbox/config":
            try:
                updates = json.loads(raw or b"{}")
                if not isinstance(updates, dict):
                    raise ValueError("the body must be a JSON object of SandboxConfig fields")
                sandbox.update_config(**updates)
            except (ValueError, TypeError) as exc:
                self._send(400, _error_body(400, str(exc)))
                return
            self._send(200, dataclasses.asdict(sandbox.config))
        else:
            self._send(404, _error_body(404))

    def _authorized(self, config: SandboxConfig) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            token = ""
            if config.accept_x_api_key:
                token = self.headers.get("X-API-Key", "").strip()
        if not token:
            return False
        return config.token is None or token == config.token

    def _skiptrace(self, version: str) -> None:
        arrived = time.monotonic()
        sandbox = self.server.sandbox
        raw = self._read_body()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        requests = body.get("requests") if isinstance(body, dict) else None
        keys = [item_key(r) for r in requests if isinstance(r, dict)] if isinstance(requests, list) else []
        sandbox.stats.arrive(arrived, keys, version)
        try:
            reply = self._skiptrace_reply(body, version)
            sandbox.stats.answered(version, reply.code, reply.billed, reply.matched, reply.unreadable)
        finally:
            # Leave before answering, so a client that has its answer never sees its call in progress.
            sandbox.stats.leave()
        self._send(reply.code, reply.payload, reply.headers, reply.raw)

    def _skiptrace_reply(self, body: Any, version: str) -> _Reply:
        """What to answer a skip-trace POST, after latency and hangs; raises to drop the connection."""
        sandbox = self.server.sandbox
        config = copy.copy(sandbox.config)  # one consistent view for this request
        stop = sandbox.stopping
        fault = config.fault
        if fault is not None and fault not in FAULTS:
            return _Reply(500, _error_body(500, f"sandbox: unknown fault {fault!r}"))
        if config.latency_s > 0 and stop.wait(config.latency_s):
            self._reset_connection()  # the server is shutting down: never answer
        if fault == "reset":
            self._reset_connection()
        if fault in ("500", "429", "401", "402"):
            return self._error_reply(int(fault), config)
        if fault == "403_balance":
            return self._error_reply(403, config)
        if fault == "timeout" and stop.wait(config.hang_s):
            self._reset_connection()
        if not self._authorized(config):
            return self._error_reply(401, config)
        if fault == "malformed":  # a 200 that is not JSON, billed as the answer it should have been
            code, payload = ANSWERS[version](body, config) if body is not None else (400, None)
            billed = _match_count(payload, version) if code == 200 else 0
            matched = _true_matches(_entries(payload, version), version) if code == 200 else 0
            return _Reply(
                200, None, raw=_MALFORMED[version], billed=billed, matched=matched, unreadable=fault
            )
        if config.error_rate > 0 and sandbox.draw() < config.error_rate:
            return self._error_reply(config.error_status, config)
        if body is None:
            return _Reply(400, _error_body(400, "The request body must be valid JSON"))
        code, payload = ANSWERS[version](body, config)
        if code != 200:
            return _Reply(code, payload)
        billed = _match_count(payload, version)
        matched = _true_matches(_entries(payload, version), version)
        unreadable: str | None = None
        raw: bytes | None = None
        container = payload["results"] if version == "v1" else payload["result"]
        list_key = "persons" if version == "v1" else "data"
        if fault == "drift":
            container[{"v1": "people", "v3": "records"}[version]] = container.pop(list_key)
            container["meta"] = container.pop("meta")
            unreadable = fault
        elif fault == "short":
            container[list_key] = container[list_key][:-1]
            unreadable = fault
        elif config.unreadable_rate > 0 and sandbox.draw_unreadable() < config.unreadable_rate:
            unreadable = sandbox.next_unreadable_kind(config)
            payload, raw = unreadable_answer(payload, version, unreadable, body, config.seed)
        return _Reply(200, payload, raw=raw, billed=billed, matched=matched, unreadable=unreadable)


_MALFORMED = {
    "v1": b'{"status": {"code": 200, "text": "OK"}, "results": {"persons": [{"_id": ',
    "v3": b'{"status": {"code": 200, "text": "OK"}, "result": {"data": [{"input": ',
}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    sandbox: SandboxServer

    def __init__(self, address: tuple[str, int], sandbox: SandboxServer) -> None:
        self.sandbox = sandbox
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def drop_connections(self) -> None:
        """Close kept-alive connections so a stopped sandbox answers nothing more."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class SandboxServer:
    """The sandbox on a loopback port. Binds at construction (so ``url`` is known), serves after ``start``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        config: SandboxConfig | None = None,
        *,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config if config is not None else SandboxConfig()
        self.stats = SandboxStats()
        self.log = log
        self.stopping = threading.Event()
        self._rng_lock = threading.Lock()
        self._rng = random.Random(self._config.seed)
        self._unreadable_rng = random.Random(f"unreadable:{self._config.seed}")
        self._unreadable_count = 0
        self._thread: threading.Thread | None = None
        server_class = _HTTPServer6 if ":" in host else _HTTPServer
        self._httpd = server_class((host, port), self)
        self._host = host

    @property
    def config(self) -> SandboxConfig:
        return self._config

    @config.setter
    def config(self, value: SandboxConfig) -> None:
        self._config = value
        self._reseed()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="batchdata-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests held by latency or a ``timeout`` fault are dropped unanswered."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()
        self._httpd.drop_connections()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def update_config(self, **fields: Any) -> SandboxConfig:
        """Validate then apply field updates in place (all or nothing).

        Re-seeds the ``error_rate`` and ``unreadable_rate`` generators and restarts the unreadable-kind
        rotation, so a test that sets its faults gets the same sequence every time.
        """
        values = {name: _coerce_config_value(name, value) for name, value in fields.items()}
        with self._rng_lock:
            for name, value in values.items():
                setattr(self._config, name, value)
        self._reseed()
        return self._config

    def reset(self) -> None:
        self.stats.reset()
        self._reseed()

    def draw(self) -> float:
        """The next number of the seeded ``error_rate`` generator."""
        with self._rng_lock:
            return self._rng.random()

    def draw_unreadable(self) -> float:
        """The next number of the seeded ``unreadable_rate`` generator (apart from ``error_rate``'s)."""
        with self._rng_lock:
            return self._unreadable_rng.random()

    def next_unreadable_kind(self, config: SandboxConfig) -> str:
        """The next kind in the rotation (``config.unreadable_kinds`` or all of them, in order)."""
        kinds = config.unreadable_kinds or list(UNREADABLE_KINDS)
        with self._rng_lock:
            kind = kinds[self._unreadable_count % len(kinds)]
            self._unreadable_count += 1
            return kind

    def _reseed(self) -> None:
        with self._rng_lock:
            self._rng = random.Random(self._config.seed)
            self._unreadable_rng = random.Random(f"unreadable:{self._config.seed}")
            self._unreadable_count = 0


# --------------------------------------------------------------------------------------------------
# Running it


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_until_signal(server: SandboxServer, announce: Callable[[str], None]) -> None:
    """Serve until SIGINT or SIGTERM (main thread only), then stop the server and return."""
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        announce(f"BatchData sandbox listening on {server.url} (set BATCHDATA_BASE_URL to this)")
        while not stop.wait(0.2):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options shared by ``manage.py batchdata_sandbox`` and ``python -m skiptrace.sandbox``."""
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8787, help="port (default 8787; 0 = any free port)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds of latency per request")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered with an error"
    )
    parser.add_argument(
        "--error-status", type=int, default=500, help="status of --error-rate errors (default 500)"
    )
    parser.add_argument("--match-rate", type=float, default=0.7, help="fraction of inputs that match")
    parser.add_argument("--token", default=None, help="require exactly this bearer token (default: any)")
    parser.add_argument("--seed", type=int, default=7, help="seed of every deterministic choice")
    parser.add_argument("--fault", choices=FAULTS, default=None, help="force a fault on every request")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds the timeout fault hangs")
    parser.add_argument("--retry-after", type=int, default=None, help="Retry-After header on 429")
    parser.add_argument(
        "--unreadable-rate",
        type=float,
        default=0.0,
        help="fraction of 200 answers replaced by a billed 200 the client cannot map",
    )
    parser.add_argument(
        "--unreadable-kinds",
        default=None,
        help=f"comma-separated rotation of unreadable kinds (default all: {','.join(UNREADABLE_KINDS)})",
    )
    parser.add_argument(
        "--match-count-extra",
        type=int,
        default=0,
        help="add this to matchCount of every 200 answer (capped at the request count)",
    )
    parser.add_argument(
        "--accept-x-api-key",
        action="store_true",
        help="also accept the token in X-API-Key (AUTH_STYLE=x-api-key)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request line to stderr")


def config_from_options(options: dict[str, Any]) -> SandboxConfig:
    """A SandboxConfig from parsed options; raises ValueError naming a bad option."""
    for name in ("latency", "error_rate", "match_rate", "hang", "unreadable_rate", "match_count_extra"):
        value = options.get(name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("error_rate", "match_rate", "unreadable_rate"):
        if options.get(name) is not None and options[name] > 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
    try:
        kinds = _coerce_config_value("unreadable_kinds", options.get("unreadable_kinds"))
    except ValueError as exc:
        raise ValueError(f"--unreadable-kinds: {exc}") from None
    return SandboxConfig(
        latency_s=options.get("latency") or 0.0,
        error_rate=options.get("error_rate") or 0.0,
        error_status=options.get("error_status") or 500,
        fault=options.get("fault"),
        hang_s=30.0 if options.get("hang") is None else options["hang"],
        retry_after=options.get("retry_after"),
        token=options.get("token") or None,
        match_rate=0.7 if options.get("match_rate") is None else options["match_rate"],
        seed=7 if options.get("seed") is None else options["seed"],
        accept_x_api_key=bool(options.get("accept_x_api_key")),
        unreadable_rate=options.get("unreadable_rate") or 0.0,
        unreadable_kinds=kinds,
        match_count_extra=options.get("match_count_extra") or 0,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skiptrace.sandbox", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = vars(parser.parse_args(argv))
    if not is_loopback(args["host"]):
        parser.error(f"refusing to listen on {args['host']!r}: the sandbox binds loopback only")
    try:
        config = config_from_options(args)
    except ValueError as exc:
        parser.error(str(exc))
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args["verbose"] else None
    server = SandboxServer(args["host"], args["port"], config, log=log)
    serve_until_signal(server, lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
