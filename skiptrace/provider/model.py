"""What the adapter speaks: requests, results (persons, phones, emails), ``ProviderError`` and its kinds,
the wire version of a path. No I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PROVIDER = "batchdata"
MAX_BATCH = 100  # BatchData takes 1..100 requests per call (V1 and V3)
DEFAULT_BASE_URL = "https://api.batchdata.com"
DEFAULT_PATH = "/api/v1/property/skip-trace"
CONNECT_TIMEOUT_S = 5.0
DETAIL_MAX = 200
BODY_MAX = 16 * 1024 * 1024  # an unreadable answer's body is kept up to this size for a reparse
API_VERSIONS = ("v1", "v3")

PHONE_MOBILE = "Mobile"
PHONE_LAND_LINE = "Land Line"
PHONE_UNKNOWN = "Unknown"
PHONE_VOIP = "VoIP"

ERROR_KINDS = frozenset(
    {
        "http_4xx",
        "http_5xx",
        "rate_limited",
        "auth",
        "out_of_credits",
        "timeout",
        "connection",
        "unreadable",
    }
)
TRANSIENT_KINDS = frozenset({"http_5xx", "rate_limited", "timeout", "connection"})


@dataclass(frozen=True)
class TraceRequest:
    """One lead in a batch. Fields are already normalized by the caller."""

    request_id: str  # our id, echoed by the provider as requestId
    street: str
    city: str
    state: str
    zip: str
    first: str = ""
    last: str = ""  # first and last empty => no "name" object is sent (entity owners)


@dataclass(frozen=True)
class Person:
    """One person the provider returned for a property (V1: one; V3: up to 3)."""

    name: str  # full name as given ("" when none)
    first: str
    last: str
    property_owner: bool | None  # V3 says; V1 does not (None)
    litigator: bool
    deceased: bool

    def to_contacts(self) -> dict:
        return {"name": self.name, "first": self.first, "last": self.last, "propertyOwner": self.property_owner,
                "litigator": self.litigator, "deceased": self.deceased}

    @staticmethod
    def from_contacts(data: dict) -> Person:
        owner = data.get("propertyOwner")
        return Person(name=str(data.get("name") or ""), first=str(data.get("first") or ""),
                      last=str(data.get("last") or ""), property_owner=owner if isinstance(owner, bool) else None,
                      litigator=bool(data.get("litigator")), deceased=bool(data.get("deceased")))


@dataclass(frozen=True)
class Phone:
    number: str  # E.164, "+1XXXXXXXXXX"
    type: str  # "Mobile" | "Land Line" | "Unknown"
    is_dnc: bool
    is_tcpa: bool
    confidence: int | None  # V1 score, 0..100
    rank: int | None = None  # V3 rank, 1 = best
    carrier: str | None = None
    tested: bool | None = None
    reachable: bool | None = None
    person: int | None = None  # index into TraceResult.persons


@dataclass(frozen=True)
class Email:
    address: str  # lowercased
    is_primary: bool  # the lead's first email
    confidence: int | None
    rank: int | None = None
    tested: bool | None = None
    person: int | None = None


@dataclass(frozen=True)
class TraceResult:
    """The answer for one TraceRequest.

    ``raw`` is excluded from equality and hashing: ``payload_hash`` already stands for it, and a
    result rebuilt from the cache (``from_contacts``, raw ``{}``) then equals the original.
    ``persons`` come property owners first; ``phones`` and ``emails`` are all the persons'
    contacts in that order, each naming its person by index.
    """

    request_id: str
    matched: bool
    phones: tuple[Phone, ...]
    emails: tuple[Email, ...]
    litigator: bool  # any person is a known TCPA litigator
    raw: dict = field(compare=False, hash=False, repr=False)  # the answer's entry as received
    payload_hash: str  # sha256 hex of the canonical JSON of raw
    persons: tuple[Person, ...] = ()

    def to_contacts(self) -> dict:
        return {
            "phones": [
                {
                    "number": p.number,
                    "type": p.type,
                    "isDoNotCall": p.is_dnc,
                    "isTcpa": p.is_tcpa,
                    "confidence": p.confidence,
                    "rank": p.rank,
                    "carrier": p.carrier,
                    "tested": p.tested,
                    "reachable": p.reachable,
                    "person": p.person,
                }
                for p in self.phones
            ],
            "emails": [
                {"address": e.address, "isPrimary": e.is_primary, "confidence": e.confidence, "rank": e.rank,
                 "tested": e.tested, "person": e.person}
                for e in self.emails
            ],
            "persons": [p.to_contacts() for p in self.persons],
            "matched": self.matched,
            "litigator": self.litigator,
        }

    @staticmethod
    def from_contacts(request_id: str, contacts: dict, payload_hash: str) -> TraceResult:
        """Inverse of ``to_contacts`` (cache hits). Missing keys (older entries) take safe defaults."""
        phones = tuple(
            Phone(
                number=str(p["number"]),
                type=str(p.get("type") or PHONE_UNKNOWN),
                is_dnc=bool(p.get("isDoNotCall", False)),
                is_tcpa=bool(p.get("isTcpa", False)),
                confidence=opt_int(p.get("confidence")),
                rank=opt_int(p.get("rank")),
                carrier=p.get("carrier") if isinstance(p.get("carrier"), str) else None,
                tested=p.get("tested") if isinstance(p.get("tested"), bool) else None,
                reachable=p.get("reachable") if isinstance(p.get("reachable"), bool) else None,
                person=opt_int(p.get("person")),
            )
            for p in contacts.get("phones") or ()
        )
        emails = tuple(
            Email(
                address=str(e["address"]),
                is_primary=bool(e.get("isPrimary", False)),
                confidence=opt_int(e.get("confidence")),
                rank=opt_int(e.get("rank")),
                tested=e.get("tested") if isinstance(e.get("tested"), bool) else None,
                person=opt_int(e.get("person")),
            )
            for e in contacts.get("emails") or ()
        )
        return TraceResult(
            request_id=request_id,
            matched=bool(contacts.get("matched", bool(phones or emails))),
            phones=phones,
            emails=emails,
            litigator=bool(contacts.get("litigator", False)),
            raw={},
            payload_hash=payload_hash,
            persons=tuple(Person.from_contacts(p) for p in contacts.get("persons") or () if isinstance(p, dict)),
        )


@dataclass(frozen=True)
class BatchResult:
    status_code: int
    results: list[TraceResult]  # one per request, same order
    match_count: int  # results.meta.results.matchCount (what the provider bills)
    provider_request_id: str | None  # results.meta.requestId
    request_json: str  # the exact body we sent; it never contains the token
    elapsed_s: float
    api_version: str = "v1"


class ProviderError(Exception):
    """Any failure of a provider call.

    ``maybe_sent`` is the money flag: True when the request may have reached the provider (and
    may have been billed) — read timeout, connection lost after sending, any HTTP answer, schema
    an unreadable answer. False only when it surely did not leave (no token, connect
    timeout/refused, DNS).

    An ``unreadable`` error (a 2xx whose body cannot be mapped completely) also carries ``body``,
    the answer as received with the token removed, and ``match_count``, the provider's
    ``matchCount`` when that number could still be read (what it bills), else None.
    """

    def __init__(
        self,
        kind: str,
        detail: str = "",
        *,
        status_code: int | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = True,
        match_count: int | None = None,
        body: str | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        self.kind = kind
        self.detail = detail
        self.status_code = status_code
        self.retry_after = retry_after
        self.maybe_sent = maybe_sent
        self.match_count = match_count
        self.body = body
        super().__init__(self.__str__())

    @property
    def transient(self) -> bool:
        return self.kind in TRANSIENT_KINDS

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}{status}: {self.detail}" if self.detail else f"{self.kind}{status}"

    def __repr__(self) -> str:
        return (
            f"ProviderError(kind={self.kind!r}, status_code={self.status_code!r}, "
            f"retry_after={self.retry_after!r}, maybe_sent={self.maybe_sent!r}, detail={self.detail!r})"
        )

    def __reduce__(self) -> tuple:  # keep keyword-only fields through pickling (multiprocessing, caches)
        return (
            rebuild_provider_error,
            (self.kind, self.detail, self.status_code, self.retry_after, self.maybe_sent, self.match_count,
             self.body),
        )


def rebuild_provider_error(
    kind: str, detail: str, status_code: int | None, retry_after: float | None, maybe_sent: bool,
    match_count: int | None = None, body: str | None = None,
) -> ProviderError:
    return ProviderError(
        kind, detail, status_code=status_code, retry_after=retry_after, maybe_sent=maybe_sent,
        match_count=match_count, body=body,
    )


def unreadable(detail: str, status_code: int = 200) -> ProviderError:
    """An answer that does not fit (the parser's one error)."""
    return ProviderError("unreadable", detail, status_code=status_code, maybe_sent=True)


def api_version(path: str) -> str:
    """``v1`` or ``v3``, from the skip-trace path; ValueError naming the key for any other path."""
    text = (path or "").strip()
    if not text.startswith("/"):
        text = "/" + text
    m = re.match(r"^/api/(v1|v3)/", text)
    if m is None:
        raise ValueError(f"BATCHDATA_SKIPTRACE_PATH must start with /api/v1/ or /api/v3/, got {path!r}")
    return m.group(1)


def opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
