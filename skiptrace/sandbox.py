"""A local simulator of the BatchData v1 property skip-trace endpoint.

Used by ``make demo``, end-to-end tests, crash tests and benchmarks. Product code never imports this
module: it reaches the sandbox only through ``BATCHDATA_BASE_URL``. Standard library only (no Django),
so it can also run as ``python -m skiptrace.sandbox --port 8787``.

Everything an answer contains is a pure function of the request content and ``SandboxConfig.seed``
(see :func:`answer`), so a re-run of the same input gets the same matches, phones and emails.

Routes:

- ``POST /api/v1/property/skip-trace`` — the provider endpoint (other methods → 405).
- ``GET /_sandbox/stats`` — :meth:`SandboxStats.snapshot`.
- ``POST /_sandbox/reset`` — reset the stats (and re-seed the ``error_rate`` generator).
- ``GET|POST /_sandbox/config`` — read / update :class:`SandboxConfig` fields from a JSON object, so an
  out-of-process test can inject faults.
- anything else → 404 JSON.
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SKIPTRACE_PATH = "/api/v1/property/skip-trace"
MAX_REQUESTS_PER_CALL = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
FAULTS = ("500", "429", "401", "402", "timeout", "reset", "malformed", "drift", "short")

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

    def __post_init__(self) -> None:
        if self.fault is not None and str(self.fault) not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS} or None, not {self.fault!r}")
        if self.fault is not None:
            self.fault = str(self.fault)


_FLOAT_FIELDS = {"latency_s", "error_rate", "hang_s", "match_rate"}
_INT_FIELDS = {"error_status", "seed"}


def _coerce_config_value(name: str, value: Any) -> Any:
    """Validate one field of a ``/_sandbox/config`` update; raises ValueError with a readable text."""
    if name in _FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number")
        if name in ("error_rate", "match_rate") and value > 1:
            raise ValueError(f"{name} must be between 0 and 1")
        return float(value)
    if name in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer")
        if name == "error_status" and not 100 <= value <= 599:
            raise ValueError("error_status must be an HTTP status code")
        return value
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
    """What the sandbox has seen, for tests and benchmarks. Every method takes the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.items = 0
        self.max_concurrent = 0
        self.current_concurrent = 0
        self.request_times: list[float] = []
        self.item_keys: Counter[str] = Counter()

    def arrive(self, at: float, keys: list[str]) -> None:
        """Count one skip-trace POST (whatever it will be answered) and mark it in progress."""
        with self._lock:
            self.requests += 1
            self.items += len(keys)
            self.request_times.append(at)
            self.item_keys.update(keys)
            self.current_concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.current_concurrent)

    def leave(self) -> None:
        with self._lock:
            self.current_concurrent -= 1

    def reset(self) -> None:
        """Forget history. Requests still in progress stay counted in ``current_concurrent``."""
        with self._lock:
            self.requests = 0
            self.items = 0
            self.request_times = []
            self.item_keys = Counter()
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
                "request_times": times,
                "max_in_any_1s_window": max_in_window(times, 1.0),
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
                "results": {
                    "requestCount": len(persons),
                    "matchCount": matches,
                    "noMatchCount": len(persons) - matches,
                    "errorCount": 0,
                },
                "requestId": _b62_id(15, config.seed, "call", canonical),
            },
        },
    }


# --------------------------------------------------------------------------------------------------
# The HTTP server


@dataclass
class _Reply:
    code: int
    payload: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None


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
        if self._path() == SKIPTRACE_PATH:
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
        elif path == SKIPTRACE_PATH:
            self._send(405, _error_body(405), {"Allow": "POST"})
        else:
            self._send(404, _error_body(404))

    def _post(self) -> None:
        path = self._path()
        if path == SKIPTRACE_PATH:
            self._skiptrace()
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

    def _skiptrace(self) -> None:
        arrived = time.monotonic()
        sandbox = self.server.sandbox
        raw = self._read_body()
        try:
            body: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            body = None
        requests = body.get("requests") if isinstance(body, dict) else None
        keys = [item_key(r) for r in requests if isinstance(r, dict)] if isinstance(requests, list) else []
        sandbox.stats.arrive(arrived, keys)
        try:
            reply = self._skiptrace_reply(body)
        finally:
            # Leave before answering, so a client that has its answer never sees its call in progress.
            sandbox.stats.leave()
        self._send(reply.code, reply.payload, reply.headers, reply.raw)

    def _skiptrace_reply(self, body: Any) -> _Reply:
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
        if fault == "malformed":
            return _Reply(
                200, None, raw=b'{"status": {"code": 200, "text": "OK"}, "results": {"persons": [{"_id": '
            )
        if fault == "timeout" and stop.wait(config.hang_s):
            self._reset_connection()
        if not self._authorized(config):
            return self._error_reply(401, config)
        if config.error_rate > 0 and sandbox.draw() < config.error_rate:
            return self._error_reply(config.error_status, config)
        if body is None:
            return _Reply(400, _error_body(400, "The request body must be valid JSON"))
        code, payload = answer(body, config)
        if code == 200 and fault == "drift":
            results = payload["results"]
            payload["results"] = {"people": results["persons"], "meta": results["meta"]}
        elif code == 200 and fault == "short":
            payload["results"]["persons"] = payload["results"]["persons"][:-1]
        return _Reply(code, payload)


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
        """Validate then apply field updates in place (all or nothing); re-seeds the error generator."""
        values = {name: _coerce_config_value(name, value) for name, value in fields.items()}
        with self._rng_lock:
            for name, value in values.items():
                setattr(self._config, name, value)
            self._rng = random.Random(self._config.seed)
        return self._config

    def reset(self) -> None:
        self.stats.reset()
        self._reseed()

    def draw(self) -> float:
        """The next number of the seeded ``error_rate`` generator."""
        with self._rng_lock:
            return self._rng.random()

    def _reseed(self) -> None:
        with self._rng_lock:
            self._rng = random.Random(self._config.seed)


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
        "--accept-x-api-key",
        action="store_true",
        help="also accept the token in X-API-Key (AUTH_STYLE=x-api-key)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every request line to stderr")


def config_from_options(options: dict[str, Any]) -> SandboxConfig:
    """A SandboxConfig from parsed options; raises ValueError naming a bad option."""
    for name in ("latency", "error_rate", "match_rate", "hang"):
        value = options.get(name)
        if value is not None and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("error_rate", "match_rate"):
        if options.get(name) is not None and options[name] > 1:
            raise ValueError(f"--{name.replace('_', '-')} must be between 0 and 1")
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
