"""BatchData property skip-trace (V1 and V3): the one HTTP choke point to the paid provider.

This module builds the request body, sends exactly one HTTP request per call, and parses the
answer into plain dataclasses. It knows no database and no Django models; only
``BatchDataClient.from_settings()`` touches Django, lazily.

Money rules that shape the code:

* One POST = one bill (``matchCount`` records). Nothing here ever retries or follows a redirect:
  the caller decides, with ``ProviderError.maybe_sent`` telling it whether the provider may have
  seen (and billed) the request.
* The wire format follows the version in the path: ``/api/v1/...`` answers ``results.persons[]``,
  ``/api/v3/...`` answers ``result.data[]``. Either is mapped by position (entry ``i`` answers
  ``requests_[i]``) and cross-checked against the echoed requestId / address.
* A 2xx answer that cannot be mapped completely is ``unreadable``: the provider did the work and
  bills it, so the error carries the body (token-free, for ``skiptrace_reparse``) and the
  ``matchCount`` when that number can still be read. Never hand one lead's phones to another.
* No phone number, email or token is logged at INFO or above; debug output goes through
  ``sanitize_for_debug``.
"""

from __future__ import annotations

import copy
import dataclasses
import email.utils
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

__all__ = [
    "PROVIDER",
    "MAX_BATCH",
    "TraceRequest",
    "Person",
    "Phone",
    "Email",
    "TraceResult",
    "BatchResult",
    "ProviderError",
    "BatchDataClient",
    "parse_response",
    "api_version",
    "mask_phone",
    "mask_email",
    "sanitize_for_debug",
]

logger = logging.getLogger("convexa.provider")

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


# --------------------------------------------------------------------------------------------
# Data


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
                confidence=_opt_int(p.get("confidence")),
                rank=_opt_int(p.get("rank")),
                carrier=p.get("carrier") if isinstance(p.get("carrier"), str) else None,
                tested=p.get("tested") if isinstance(p.get("tested"), bool) else None,
                reachable=p.get("reachable") if isinstance(p.get("reachable"), bool) else None,
                person=_opt_int(p.get("person")),
            )
            for p in contacts.get("phones") or ()
        )
        emails = tuple(
            Email(
                address=str(e["address"]),
                is_primary=bool(e.get("isPrimary", False)),
                confidence=_opt_int(e.get("confidence")),
                rank=_opt_int(e.get("rank")),
                tested=e.get("tested") if isinstance(e.get("tested"), bool) else None,
                person=_opt_int(e.get("person")),
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
            _rebuild_provider_error,
            (self.kind, self.detail, self.status_code, self.retry_after, self.maybe_sent, self.match_count,
             self.body),
        )


def _rebuild_provider_error(
    kind: str, detail: str, status_code: int | None, retry_after: float | None, maybe_sent: bool,
    match_count: int | None = None, body: str | None = None,
) -> ProviderError:
    return ProviderError(
        kind, detail, status_code=status_code, retry_after=retry_after, maybe_sent=maybe_sent,
        match_count=match_count, body=body,
    )


def _drift(detail: str, status_code: int = 200) -> ProviderError:
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


# --------------------------------------------------------------------------------------------
# Client


class BatchDataClient:
    def __init__(
        self,
        *,
        base_url: str,
        path: str,
        token: str | None,
        auth_style: str = "bearer",
        timeout: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        style = (auth_style or "").strip().lower()
        if style not in ("bearer", "x-api-key"):
            raise ValueError(f"BATCHDATA_AUTH_STYLE must be 'bearer' or 'x-api-key', got {auth_style!r}")
        parts = urlsplit((base_url or "").strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"BATCHDATA_BASE_URL must be an http(s) URL, got {base_url!r}")
        timeout = float(timeout)
        if not timeout > 0:
            raise ValueError(f"provider timeout must be > 0, got {timeout!r}")
        token = (token or "").strip() or None
        if token is not None and any(ord(c) < 0x21 or ord(c) == 0x7F for c in token):
            # requests would raise InvalidHeader with the header value (the token) in its message.
            raise ValueError("BATCHDATA_API_TOKEN contains whitespace or control characters")

        path = (path or "").strip()
        if path and not path.startswith("/"):
            path = "/" + path
        self._api_version = api_version(path or DEFAULT_PATH)
        self._url = base_url.strip().rstrip("/") + path
        self._token = token
        self._auth_style = style
        self._timeout = timeout
        if session is None:
            session = requests.Session()
            # NO automatic retries, ever: a POST the provider received is billed, so a transparent
            # retry (urllib3 Retry, a replay of a stale keep-alive connection) could double-bill.
            # The caller retries deliberately, knowing ProviderError.maybe_sent.
            adapter = HTTPAdapter(max_retries=Retry(total=0, connect=0, read=False, redirect=False, status=0))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        # An injected session is used as given (tests, shared pools); its owner keeps it retry-free.
        self._session = session

    @classmethod
    def from_settings(cls) -> BatchDataClient:
        from django.conf import settings  # lazy: this module must import without Django

        return cls(
            base_url=getattr(settings, "BATCHDATA_BASE_URL", None) or DEFAULT_BASE_URL,
            path=getattr(settings, "BATCHDATA_SKIPTRACE_PATH", None) or DEFAULT_PATH,
            token=getattr(settings, "BATCHDATA_API_TOKEN", None),
            auth_style=getattr(settings, "BATCHDATA_AUTH_STYLE", None) or "bearer",
            timeout=float(getattr(settings, "PROVIDER_TIMEOUT_S", 30.0) or 30.0),
        )

    @property
    def configured(self) -> bool:
        return self._token is not None

    @property
    def url(self) -> str:
        return self._url

    @property
    def api_version(self) -> str:
        """``v1`` | ``v3``: the wire format, from the path."""
        return self._api_version

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def masked_auth(self) -> str:
        """For start-up banners: first 4 characters of the token only."""
        if self._token is None:
            return "(no token)"
        # A short token would be mostly revealed by its first 4 characters: show none of it.
        shown = self._token[:4] if len(self._token) >= 12 else ""
        prefix = "Bearer " if self._auth_style == "bearer" else "X-API-Key: "
        return f"{prefix}{shown}****"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._auth_style == "bearer":
            headers["Authorization"] = f"Bearer {self._token}"
        else:
            headers["X-API-Key"] = str(self._token)
        return headers

    def _scrub(self, text: str) -> str:
        """Short, single-line, token-free text for ProviderError.detail."""
        text = " ".join(str(text).split())
        if self._token:
            text = text.replace(self._token, "****")
        if len(text) > DETAIL_MAX:
            text = text[: DETAIL_MAX - 1] + "…"
        return text

    def build_body(self, requests_: Sequence[TraceRequest]) -> dict:
        """The v1 request body.

        Raises ValueError for a request the provider would refuse (no street, neither a zip nor
        city+state, duplicate request_id): one bad request can make the provider answer 400 for
        the whole batch, so it must never be sent.
        """
        items: list[dict] = []
        seen: set[str] = set()
        for i, req in enumerate(requests_):
            if not isinstance(req, TraceRequest):
                raise ValueError(f"requests_[{i}] is {type(req).__name__}, not TraceRequest")
            rid = str(req.request_id).strip()
            if not rid:
                raise ValueError(f"requests_[{i}] has an empty request_id")
            if rid in seen:
                raise ValueError(f"requests_[{i}] repeats request_id {rid!r}")
            seen.add(rid)
            street, city, state, zip_ = (
                (req.street or "").strip(),
                (req.city or "").strip(),
                (req.state or "").strip(),
                (req.zip or "").strip(),
            )
            if not street:
                raise ValueError(f"request {rid!r} has no street")
            if not zip_ and not (city and state):
                raise ValueError(f"request {rid!r} needs a zip or city+state")
            address = {
                k: v for k, v in (("street", street), ("city", city), ("state", state), ("zip", zip_)) if v
            }
            item: dict[str, Any] = {"requestId": rid, "propertyAddress": address}
            name = {
                k: v
                for k, v in (("first", (req.first or "").strip()), ("last", (req.last or "").strip()))
                if v
            }
            if name:
                item["name"] = name
            items.append(item)
        if self._api_version == "v3":
            return {"requests": items}  # V3 keeps TCPA-flagged phones (flagged) by default
        # Without this option V1 silently drops TCPA-flagged phones; we want them, flagged.
        return {"requests": items, "options": {"includeTCPABlacklistedPhones": True}}

    def skip_trace(
        self, requests_: Sequence[TraceRequest], *, before_send: Callable[[], None] | None = None
    ) -> BatchResult:
        """Send one batch (1..100 requests) as exactly one POST; parse the answer.

        ``before_send`` runs after the body is built, immediately before the POST (the money path
        checks there that its rate permit is still fresh). Raises ValueError for a bad batch
        (nothing sent) and ProviderError for anything else.
        """
        requests_ = list(requests_)
        if not 1 <= len(requests_) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} requests, got {len(requests_)}")
        body = self.build_body(requests_)
        if self._token is None:
            raise ProviderError(
                "auth", "BATCHDATA_API_TOKEN is not configured; nothing was sent", maybe_sent=False
            )
        request_json = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("batchdata request %s", json.dumps(sanitize_for_debug(body)))
        if before_send is not None:
            before_send()

        started = time.perf_counter()
        try:
            resp = self._session.post(
                self._url,
                data=request_json.encode("utf-8"),
                headers=self._headers(),
                timeout=(min(CONNECT_TIMEOUT_S, self._timeout), self._timeout),
                allow_redirects=False,  # a redirect would re-send a billed POST (and the token) elsewhere
            )
        except requests.RequestException as exc:
            elapsed = time.perf_counter() - started
            err = self._error_from_exception(exc)
            logger.info(
                "batchdata POST %s requests=%d status=- error=%s maybe_sent=%s elapsed=%.3fs",
                self._url,
                len(requests_),
                err.kind,
                err.maybe_sent,
                elapsed,
            )
            raise err from exc
        elapsed = time.perf_counter() - started

        try:
            result = self._handle_response(resp, requests_, request_json, elapsed)
        except ProviderError as err:
            logger.info(
                "batchdata POST %s requests=%d status=%s error=%s elapsed=%.3fs",
                self._url,
                len(requests_),
                resp.status_code,
                err.kind,
                elapsed,
            )
            raise
        logger.info(
            "batchdata POST %s requests=%d status=%s matched=%d provider_request_id=%s elapsed=%.3fs",
            self._url,
            len(requests_),
            resp.status_code,
            result.match_count,
            result.provider_request_id,
            elapsed,
        )
        return result

    def _handle_response(
        self, resp: requests.Response, requests_: list[TraceRequest], request_json: str, elapsed: float
    ) -> BatchResult:
        status = resp.status_code
        if not 200 <= status < 300:
            raise self._error_from_status(resp)
        try:
            body = resp.json()
        except ValueError:
            raise self._unreadable(resp, None, f"HTTP {status} body is not JSON") from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("batchdata response %s", json.dumps(sanitize_for_debug(body)))
        try:
            results, match_count, provider_request_id = parse_response(body, requests_, version=self._api_version)
        except ProviderError as err:
            raise self._unreadable(resp, body, err.detail) from None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a parser bug is still unreadable
            raise self._unreadable(resp, body, f"parser error {exc.__class__.__name__}") from None
        return BatchResult(
            status_code=status,
            results=results,
            match_count=match_count,
            provider_request_id=provider_request_id,
            request_json=request_json,
            elapsed_s=elapsed,
            api_version=self._api_version,
        )

    def _unreadable(self, resp: requests.Response, body: Any, detail: str) -> ProviderError:
        """A 2xx we could not map: billed, outcome unknown. Keeps the token-free body and the
        provider's matchCount when it can still be read."""
        text = resp.text or ""
        if self._token:
            text = text.replace(self._token, "****")
        if len(text) > BODY_MAX:
            text = text[:BODY_MAX]
        return ProviderError(
            "unreadable",
            self._scrub(detail),
            status_code=resp.status_code,
            maybe_sent=True,
            match_count=readable_match_count(body, self._api_version),
            body=text,
        )

    def _error_from_status(self, resp: requests.Response) -> ProviderError:
        status = resp.status_code
        if status == 402 or (status == 403 and _says_out_of_credits(resp)):
            kind = "out_of_credits"  # 402 (V1, seen by others); V3: 403 "Insufficient balance"
        elif status in (401, 403):
            kind = "auth"
        elif status == 429:
            kind = "rate_limited"
        elif status >= 500:
            kind = "http_5xx"
        else:  # other 4xx, and anything unexpected (3xx: we never follow redirects)
            kind = "http_4xx"
        return ProviderError(
            kind,
            self._scrub(_error_detail(resp)),
            status_code=status,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            maybe_sent=True,
        )

    def _error_from_exception(self, exc: requests.RequestException) -> ProviderError:
        # Order matters: ConnectTimeout is both a ConnectionError and a Timeout.
        detail = self._scrub(f"{type(exc).__name__}: {exc}")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return ProviderError("timeout", detail, maybe_sent=False)
        if isinstance(exc, requests.exceptions.Timeout):  # ReadTimeout: the request went out
            return ProviderError("timeout", detail, maybe_sent=True)
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = _root_reason(exc)
            if isinstance(reason, ReadTimeoutError):  # body read timed out (raised as ConnectionError)
                return ProviderError("timeout", detail, maybe_sent=True)
            # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
            if isinstance(reason, NewConnectionError | ConnectionRefusedError):
                # refused, DNS failure (NameResolutionError is a NewConnectionError): never sent
                return ProviderError("connection", detail, maybe_sent=False)
            if isinstance(reason, ConnectTimeoutError):
                return ProviderError("timeout", detail, maybe_sent=False)
            # connection reset/aborted, proxy and TLS errors: we cannot prove nothing was sent
            return ProviderError("connection", detail, maybe_sent=True)
        # ChunkedEncodingError, ContentDecodingError, anything else: after sending
        return ProviderError("connection", detail, maybe_sent=True)


def _root_reason(exc: BaseException) -> BaseException | None:
    """The urllib3/socket error a requests exception wraps (through MaxRetryError)."""
    reason: Any = exc.args[0] if exc.args else None
    for _ in range(4):
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        else:
            break
    return reason if isinstance(reason, BaseException) else None


def _says_out_of_credits(resp: requests.Response) -> bool:
    text = _error_detail(resp).lower()
    return "insufficient balance" in text or "out of credits" in text or "insufficient credit" in text


def _error_detail(resp: requests.Response) -> str:
    """The provider's status.text or message when the body is JSON, else the start of the text."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        status = body.get("status")
        if isinstance(status, dict) and isinstance(status.get("text"), str) and status["text"].strip():
            return status["text"]
        for key in ("message", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
    text = (resp.text or "").strip()
    return text[:DETAIL_MAX] if text else (resp.reason or "")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (>= 0), from delta-seconds or an HTTP-date; None when absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN / inf
        return None
    return max(0.0, seconds)


# --------------------------------------------------------------------------------------------
# Parsing


def parse_response(
    body: Any, requests_: Sequence[TraceRequest], *, version: str = "v1"
) -> tuple[list[TraceResult], int, str | None]:
    """Map a 2xx answer onto ``requests_`` by position.

    Returns (results in request order, matchCount, provider requestId). Raises
    ProviderError(kind="unreadable") on anything that does not fit, including an echoed
    address or requestId that does not belong to the request at that position.
    """
    if version not in API_VERSIONS:
        raise ValueError(f"unknown BatchData API version {version!r}")
    if not isinstance(body, dict):
        raise _drift(f"body is {type(body).__name__}, not an object")
    top = "result" if version == "v3" else "results"
    list_key = "data" if version == "v3" else "persons"
    results_obj = body.get(top)
    if not isinstance(results_obj, dict):
        status = body.get("status")
        text = status.get("text") if isinstance(status, dict) else None
        raise _drift(f"no {top} object" + (f" (status: {text})" if isinstance(text, str) else ""))
    entries = results_obj.get(list_key)
    if not isinstance(entries, list):
        raise _drift(f"{top}.{list_key} is missing or not a list")
    if len(entries) != len(requests_):
        raise _drift(f"{len(entries)} {top}.{list_key} entries for {len(requests_)} requests")

    parse_entry = _parse_v3_entry if version == "v3" else _parse_person
    parsed = [parse_entry(i, entry, req) for i, (entry, req) in enumerate(zip(entries, requests_, strict=True))]

    meta = results_obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _drift(f"{top}.meta is not an object")
    meta = meta or {}
    counts = meta.get("results")
    if counts is not None and not isinstance(counts, dict):
        raise _drift(f"{top}.meta.results is not an object")
    computed = sum(1 for r in parsed if r.matched)
    raw_count = (counts or {}).get("matchCount")
    if raw_count is None:
        match_count = computed  # not sent: bill by what we see
    elif _is_count(raw_count) and raw_count <= len(requests_):
        match_count = raw_count
        if raw_count != computed:
            logger.warning("batchdata matchCount=%d but %d entries look matched", raw_count, computed)
    else:
        raise _drift(f"{top}.meta.results.matchCount is {raw_count!r} for {len(requests_)} requests")

    rid = meta.get("requestId")
    provider_request_id = (
        str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) and str(rid) else None
    )
    return parsed, match_count, provider_request_id


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def readable_match_count(body: Any, version: str) -> int | None:
    """The provider's ``matchCount`` (what it bills) from any answer in which it can still be read."""
    if not isinstance(body, dict):
        return None
    top = body.get("result" if version == "v3" else "results")
    if not isinstance(top, dict):  # a body of the other version's shape still tells its bill
        top = body.get("results" if version == "v3" else "result")
    meta = top.get("meta") if isinstance(top, dict) else None
    counts = meta.get("results") if isinstance(meta, dict) else None
    value = counts.get("matchCount") if isinstance(counts, dict) else None
    return value if _is_count(value) else None


def _list_field(where: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _drift(f"{where} is {type(value).__name__}, not a list")
    return value


def _person_name(where: str, name: Any) -> tuple[str, str, str]:
    """(full, first, last) from a provider name object (or a plain string)."""
    if name is None:
        return "", "", ""
    if isinstance(name, str):
        return name.strip(), "", ""
    if not isinstance(name, dict):
        raise _drift(f"{where}.name is {type(name).__name__}, not an object")
    parts = {k: name.get(k) for k in ("first", "middle", "last", "full")}
    for key, value in parts.items():
        if value is not None and not isinstance(value, str):
            raise _drift(f"{where}.name.{key} is {type(value).__name__}, not text")
    first, last = (parts["first"] or "").strip(), (parts["last"] or "").strip()
    full = (parts["full"] or "").strip() or " ".join(x for x in (first, (parts["middle"] or "").strip(), last) if x)
    return full, first, last


def _parse_person(i: int, person: Any, req: TraceRequest) -> TraceResult:
    """One V1 ``results.persons[i]`` entry: one person and their contacts."""
    if not isinstance(person, dict):
        raise _drift(f"persons[{i}] is {type(person).__name__}, not an object")

    echo_id = person.get("requestId")
    if echo_id is not None and str(echo_id) != str(req.request_id):
        raise _drift(f"persons[{i}] echoes requestId {echo_id!r}, expected {req.request_id!r}")
    _check_address_echo(f"persons[{i}]", person.get("propertyAddress"), req)

    phones_raw = _list_field(f"persons[{i}].phoneNumbers", person.get("phoneNumbers"))
    emails_raw = _list_field(f"persons[{i}].emails", person.get("emails"))

    meta = person.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _drift(f"persons[{i}].meta is not an object")
    if isinstance(meta, dict) and meta.get("matched") is not None:
        if not isinstance(meta["matched"], bool):
            raise _drift(f"persons[{i}].meta.matched is {meta['matched']!r}")
        matched = meta["matched"]
    else:
        matched = bool(person.get("_id") or person.get("name") or phones_raw or emails_raw)

    litigator = _flag(person.get("litigator"))
    persons: tuple[Person, ...] = ()
    phones: tuple[Phone, ...] = ()
    emails: tuple[Email, ...] = ()
    if matched:
        full, first, last = _person_name(f"persons[{i}]", person.get("name"))
        deceased = _flag(person.get("deceased")) or _flag(person.get("death"))
        persons = (Person(name=full, first=first, last=last, property_owner=None, litigator=litigator,
                          deceased=deceased),)
        phones = _merge_phones(_parse_phones(f"persons[{i}].phoneNumbers", phones_raw, person=0))
        emails = _merge_emails(_parse_emails(f"persons[{i}].emails", emails_raw, person=0))

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


def _parse_v3_entry(i: int, entry: Any, req: TraceRequest) -> TraceResult:
    """One V3 ``result.data[i]`` entry: up to 3 persons, property owners first."""
    where = f"data[{i}]"
    if not isinstance(entry, dict):
        raise _drift(f"{where} is {type(entry).__name__}, not an object")
    echo = entry.get("input")
    if echo is not None and not isinstance(echo, dict):
        raise _drift(f"{where}.input is not an object")
    echo = echo or {}
    echo_id = echo.get("requestId")
    if echo_id is not None and str(echo_id) != str(req.request_id):
        raise _drift(f"{where} echoes requestId {echo_id!r}, expected {req.request_id!r}")
    _check_address_echo(f"{where}.input", echo.get("propertyAddress"), req)
    prop = entry.get("property")
    if prop is not None and not isinstance(prop, dict):
        raise _drift(f"{where}.property is not an object")

    persons_raw = _list_field(f"{where}.persons", entry.get("persons"))
    meta = entry.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _drift(f"{where}.meta is not an object")
    flag = (meta or {}).get("matched")
    if flag is not None and not isinstance(flag, bool):
        raise _drift(f"{where}.meta.matched is {flag!r}")
    # BatchData bills a matched property with at least one person; that is what "matched" means here.
    matched = (flag if flag is not None else True) and bool(persons_raw)

    people: list[tuple[Person, list, list]] = []
    for j, raw in enumerate(persons_raw):
        pw = f"{where}.persons[{j}]"
        if not isinstance(raw, dict):
            raise _drift(f"{pw} is {type(raw).__name__}, not an object")
        owner = raw.get("propertyOwner")
        if owner is not None and not isinstance(owner, bool):
            raise _drift(f"{pw}.propertyOwner is {owner!r}")
        full, first, last = _person_name(pw, raw.get("name"))
        people.append((
            Person(name=full, first=first, last=last, property_owner=owner,
                   litigator=_flag(raw.get("litigator")), deceased=_flag(raw.get("deceased"))),
            _list_field(f"{pw}.phones", raw.get("phones")),
            _list_field(f"{pw}.emails", raw.get("emails")),
        ))
    people.sort(key=lambda p: p[0].property_owner is not True)  # stable: provider order otherwise

    phones: list[Phone] = []
    emails: list[Email] = []
    if matched:
        for n, (_, phones_raw, emails_raw) in enumerate(people):
            phones.extend(_parse_phones(f"{where}.persons[{n}].phones", phones_raw, person=n, by_rank=True))
            emails.extend(_parse_emails(f"{where}.persons[{n}].emails", emails_raw, person=n, by_rank=True))
    persons = tuple(p for p, _, _ in people) if matched else ()
    return TraceResult(
        request_id=req.request_id,
        matched=matched,
        phones=_merge_phones(phones, frozenset(n for n, p in enumerate(persons) if p.litigator or p.deceased)),
        emails=_merge_emails(emails),
        litigator=any(p.litigator for p in persons),
        raw=entry,
        payload_hash=payload_hash(entry),
        persons=persons,
    )


def payload_hash(raw: Any) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _zip5(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    digits = re.sub(r"\D", "", str(value).split("-")[0])
    if len(digits) >= 5:
        return digits[:5]
    if 3 <= len(digits) <= 4:  # "2122" / 2122: a zip that lost its leading zero(s)
        return digits.zfill(5)
    return None


def _house_number(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    m = re.match(r"\s*(\d+)", str(value))
    return int(m.group(1)) if m else None


def _check_address_echo(where: str, echo: Any, req: TraceRequest) -> None:
    if echo is None:
        return
    if not isinstance(echo, dict):
        raise _drift(f"{where}.propertyAddress is not an object")
    ours_zip, echo_zip = _zip5(req.zip), _zip5(echo.get("zip"))
    if ours_zip and echo_zip and ours_zip != echo_zip:
        raise _drift(
            f"{where} address echo zip {echo_zip} does not match request {req.request_id!r} zip {ours_zip}"
        )
    ours_house = _house_number(req.street)
    echo_house = _house_number(echo.get("houseNumber"))
    if echo_house is None:
        echo_house = _house_number(echo.get("street"))
    if ours_house is not None and echo_house is not None and ours_house != echo_house:
        raise _drift(
            f"{where} address echo house number {echo_house} does not match "
            f"request {req.request_id!r} house number {ours_house}"
        )


_TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0", ""})


def _flag(value: Any) -> bool:
    """A provider boolean. Absent is False; an unrecognised value counts as True, because every
    flag we read (dnc, tcpa, litigator) restricts dialing: ambiguity must not unlock a call."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _FALSE_STRINGS:
            return False
        return True
    if isinstance(value, dict | list):
        return any(_flag(v) for v in (value.values() if isinstance(value, dict) else value))
    return True


def _confidence(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or value != value:  # NaN
        return None
    if value in (float("inf"), float("-inf")):
        return 100 if value > 0 else 0
    return max(0, min(100, int(round(value))))


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _phone_type(value: Any) -> str:
    key = re.sub(r"[^a-z]", "", str(value or "").lower())
    if key in ("mobile", "cell", "cellular", "wireless", "mobilephone", "cellphone"):
        return PHONE_MOBILE
    if key in ("landline", "land", "fixedline", "wireline"):
        return PHONE_LAND_LINE
    return PHONE_UNKNOWN  # VoIP, toll-free, pager, absent...


def to_e164(number: Any) -> str | None:
    """US/NANP number as "+1XXXXXXXXXX", or None when it is not one."""
    if number is None or isinstance(number, bool):
        return None
    digits = re.sub(r"\D", "", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return None
    if digits[0] in "01" or digits[3] in "01":  # NANP: area code and exchange start with 2-9
        return None
    return "+1" + digits


def _opt_bool(value: Any) -> bool | None:
    """A descriptive provider boolean (tested, reachable): None when absent or not readable."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    return None


def _opt_rank(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) == float("inf"):
        return None
    return int(value)


def _ranked(items: list, by_rank: bool) -> list:
    """V3: order by ``rank`` (1 = best; unranked last, provider order otherwise)."""
    if not by_rank:
        return list(items)
    def key(item: Any) -> tuple[bool, int]:
        rank = _opt_rank(item.get("rank")) if isinstance(item, dict) else None
        return (rank is None, rank or 0)
    return sorted(items, key=key)


def _parse_phones(where: str, items: list, *, person: int | None = None, by_rank: bool = False) -> list[Phone]:
    out: list[Phone] = []
    for j, item in enumerate(_ranked(items, by_rank)):
        if isinstance(item, str | int) and not isinstance(item, bool):
            item = {"number": item}
        if not isinstance(item, dict):
            raise _drift(f"{where}[{j}] is {type(item).__name__}, not an object")
        number = to_e164(item.get("number"))
        if number is None:
            logger.debug("batchdata %s[%d] skipped: not a NANP number", where, j)
            continue
        carrier = item.get("carrier")
        out.append(Phone(
            number=number,
            type=_phone_type(item.get("type")),
            is_dnc=_flag(item.get("dnc")),
            is_tcpa=_flag(item.get("tcpa")),
            confidence=_confidence(item.get("score")),
            rank=_opt_rank(item.get("rank")),
            carrier=carrier.strip() or None if isinstance(carrier, str) else None,
            tested=_opt_bool(item.get("tested")),
            reachable=_opt_bool(item.get("reachable")),
            person=person,
        ))
    return out


def _merge_phones(phones: list[Phone], barred: frozenset[int] = frozenset()) -> tuple[Phone, ...]:
    """Same number twice (one person or two): keep the first (owners first, then rank), but any
    DNC/TCPA flag wins. A number that is also a litigator's or a deceased person's (``barred``
    person indexes) keeps that entry too, so the dialer sees it and never calls the number."""
    out: list[Phone] = []
    index: dict[str, int] = {}
    for phone in phones:
        k = index.get(phone.number)
        if k is None:
            index[phone.number] = len(out)
            out.append(phone)
            continue
        prev = out[k]
        if phone.person in barred and not any(p.number == phone.number and p.person in barred for p in out):
            out.append(phone)
        out[k] = dataclasses.replace(prev, is_dnc=prev.is_dnc or phone.is_dnc, is_tcpa=prev.is_tcpa or phone.is_tcpa)
    return tuple(out)


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _parse_emails(where: str, items: list, *, person: int | None = None, by_rank: bool = False) -> list[Email]:
    out: list[Email] = []
    for j, item in enumerate(_ranked(items, by_rank)):
        if isinstance(item, str):
            item = {"email": item}
        if not isinstance(item, dict):
            raise _drift(f"{where}[{j}] is {type(item).__name__}, not an object")
        value = item.get("email")
        if not isinstance(value, str) or not value.strip():
            value = item.get("address")
        if not isinstance(value, str):
            continue
        address = value.strip().lower()
        if not _EMAIL_RE.match(address):
            continue
        out.append(Email(address=address, is_primary=False, confidence=_confidence(item.get("score")),
                         rank=_opt_rank(item.get("rank")),
                         tested=_opt_bool(item.get("tested")), person=person))
    return out


def _merge_emails(emails: list[Email]) -> tuple[Email, ...]:
    """Without repeats; the lead's first address is its primary one."""
    out: list[Email] = []
    seen: set[str] = set()
    for e in emails:
        if e.address in seen:
            continue
        seen.add(e.address)
        out.append(dataclasses.replace(e, is_primary=not out))
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Masking, for logs and debug output


def mask_phone(number: str) -> str:
    """ "+18135550142" -> "+1813***0142"; other shapes keep at most their last 4 digits."""
    digits = re.sub(r"\D", "", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        return f"+1{digits[:3]}***{digits[-4:]}"
    if len(digits) >= 7:
        return "***" + digits[-4:]
    return "***"


def mask_email(address: str) -> str:
    """ "d.alvarez@example.com" -> "d***@example.com"."""
    text = str(address).strip()
    local, sep, domain = text.rpartition("@")
    if not sep or not domain:
        return "***"
    return f"{local[:1]}***@{domain}"


_SECRET_KEYS = frozenset({"authorization", "x-api-key", "api-key", "apikey", "api_key", "password", "secret"})
# A phone number inside any string: 10 digits, optionally +1/1 and the usual punctuation.
_PHONE_SEARCH_RE = re.compile(r"(?<![\d+])(?:\+?1[\s.\-]?)?\(?\d{3}\)?[\s.\-]?\d{3}[\s.\-]?\d{4}(?!\d)")
_EMAIL_SEARCH_RE = re.compile(r"[^@\s\"'<>(),;:]+@[^@\s\"'<>(),;:]+\.[A-Za-z]{2,}")


def _is_secret_key(key: Any) -> bool:
    k = str(key).strip().lower()
    return k in _SECRET_KEYS or "token" in k


def _sanitize(obj: Any, phone_context: bool) -> Any:
    """phone_context: inside a key that names a phone ("phoneNumbers", "phone", ...), where any
    value with 7+ digits is taken for a number, whatever its shape."""
    if isinstance(obj, dict):
        return {
            key: _sanitize(value, phone_context or "phone" in str(key).lower())
            for key, value in obj.items()
            if not _is_secret_key(key)
        }
    if isinstance(obj, list | tuple):
        return [_sanitize(v, phone_context) for v in obj]
    if isinstance(obj, str):
        if phone_context and len(re.sub(r"\D", "", obj)) >= 7 and not re.search(r"[A-Za-z@]", obj):
            return mask_phone(obj)
        text = _PHONE_SEARCH_RE.sub(lambda m: mask_phone(m.group(0)), obj)
        return _EMAIL_SEARCH_RE.sub(lambda m: mask_email(m.group(0)), text)
    if isinstance(obj, int) and not isinstance(obj, bool) and phone_context and abs(obj) >= 1_000_000:
        return mask_phone(str(obj))
    return copy.deepcopy(obj)


def sanitize_for_debug(obj: Any) -> Any:
    """Deep copy of request/response JSON with every phone number and email masked and every
    authorization/token-like key removed. A JSON string is sanitized and returned as a string."""
    if isinstance(obj, str | bytes):
        text = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else obj
        try:
            parsed = json.loads(text)
        except ValueError:
            return _sanitize(text, False)
        if isinstance(parsed, dict | list):
            return json.dumps(_sanitize(parsed, False), ensure_ascii=False)
        return _sanitize(text, False)
    return _sanitize(obj, False)
