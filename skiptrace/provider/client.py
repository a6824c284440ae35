"""The one HTTP choke point: ``BatchDataClient`` builds the V1 or V3 body, sends exactly one POST (no
retries, no redirects), and turns every failure into a ``ProviderError`` whose ``maybe_sent`` tells
the money path whether the provider may have billed it.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from skiptrace.provider.model import (
    BODY_MAX,
    CONNECT_TIMEOUT_S,
    DEFAULT_BASE_URL,
    DEFAULT_PATH,
    DETAIL_MAX,
    MAX_BATCH,
    BatchResult,
    ProviderError,
    TraceRequest,
    api_version,
)
from skiptrace.provider.parse import parse_response, readable_match_count
from skiptrace.provider.redaction import sanitize_for_debug
from skiptrace.provider.transport import SendHookAdapter, before_write_hook, written_at

logger = logging.getLogger("convexa.provider")


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
        pool_size: int = 10,
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
            # pool_maxsize: one kept-alive connection per request in flight (SKIP_TRACE_CONCURRENCY);
            # at urllib3's default of 10, 32 threads sending at once opened and threw away a TCP
            # (and TLS) connection for every request beyond the tenth.
            # SendHookAdapter: before_write runs right before the request's bytes are written.
            adapter = SendHookAdapter(max_retries=Retry(total=0, connect=0, read=False, redirect=False, status=0),
                                  pool_maxsize=max(10, int(pool_size)))
            session.mount("https://", adapter)
            session.mount("http://", adapter)
        # An injected session is used as given (tests, shared pools); its owner keeps it retry-free.
        self._session = session
        # whether its connections run ``before_write`` themselves (skiptrace.provider.transport)
        try:
            self._hooked = isinstance(session.get_adapter(self._url), SendHookAdapter)
        except requests.exceptions.InvalidSchema:  # no adapter at all: the POST fails as it always did
            self._hooked = False

    @classmethod
    def from_settings(cls) -> BatchDataClient:
        from django.conf import settings  # lazy: this module must import without Django

        return cls(
            base_url=getattr(settings, "BATCHDATA_BASE_URL", None) or DEFAULT_BASE_URL,
            path=getattr(settings, "BATCHDATA_SKIPTRACE_PATH", None) or DEFAULT_PATH,
            token=getattr(settings, "BATCHDATA_API_TOKEN", None),
            auth_style=getattr(settings, "BATCHDATA_AUTH_STYLE", None) or "bearer",
            timeout=float(getattr(settings, "PROVIDER_TIMEOUT_S", 30.0) or 30.0),
            pool_size=int(getattr(settings, "SKIP_TRACE_CONCURRENCY", 10) or 10),
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

    def encode_body(self, requests_: Sequence[TraceRequest]) -> str:
        """The POST body of these requests, as ``skip_trace`` sends it (ValueError for a bad batch)."""
        return json.dumps(self.build_body(list(requests_)), separators=(",", ":"), ensure_ascii=False)

    def skip_trace(
        self, requests_: Sequence[TraceRequest], *, before_send: Callable[[], None] | None = None,
        request_json: str | None = None, before_write: Callable[[], None] | None = None,
    ) -> BatchResult:
        """Send one batch (1..100 requests) as exactly one POST; parse the answer.

        ``before_send`` runs after the body is built, immediately before the POST (the money path
        checks there that its rate permit is still fresh); ``before_write`` once more inside urllib3,
        on a connection already set up, right before the request is written (skiptrace.provider.transport;
        not with an injected session of other adapters). ``request_json``: the body made by
        ``encode_body`` for these same requests before the waits, so that nothing but the send
        follows the permit. Raises ValueError for a bad batch (nothing sent) and ProviderError for
        anything else.
        """
        requests_ = list(requests_)
        if not 1 <= len(requests_) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} requests, got {len(requests_)}")
        body = self.build_body(requests_) if request_json is None else None
        if self._token is None:
            raise ProviderError(
                "auth", "BATCHDATA_API_TOKEN is not configured; nothing was sent", maybe_sent=False
            )
        if request_json is None:
            request_json = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        elif logger.isEnabledFor(logging.DEBUG):
            body = json.loads(request_json)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("batchdata request %s", json.dumps(sanitize_for_debug(body)))
        if before_send is not None:
            before_send()
        if before_write is not None and not self._hooked:
            before_write()  # an injected session of other adapters: here, the latest this client can
            before_write = None

        started = time.perf_counter()
        try:
            with before_write_hook(before_write):
                resp = self._session.post(
                    self._url,
                    data=request_json.encode("utf-8"),
                    headers=self._headers(),
                    timeout=(min(CONNECT_TIMEOUT_S, self._timeout), self._timeout),
                    allow_redirects=False,  # a redirect would re-send a billed POST (and the token) elsewhere
                )
        except requests.RequestException as exc:
            started = written_at() or started
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
        started = written_at() or started  # the provider's time: from the write, not the permit's wait
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
                time.perf_counter() - started,
            )
            raise
        # elapsed counts from the moment the request left to this line (reading the answer
        # included), so the log's time minus elapsed is when it was sent (tests/helpers.py).
        logger.info(
            "batchdata POST %s requests=%d status=%s matched=%d provider_request_id=%s elapsed=%.3fs",
            self._url,
            len(requests_),
            resp.status_code,
            result.match_count,
            result.provider_request_id,
            time.perf_counter() - started,
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
        if status == 402 or (status == 403 and says_out_of_credits(resp)):
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
            self._scrub(error_detail(resp)),
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
            reason = root_reason(exc)
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


def root_reason(exc: BaseException) -> BaseException | None:
    """The urllib3/socket error a requests exception wraps (through MaxRetryError)."""
    reason: Any = exc.args[0] if exc.args else None
    for _ in range(4):
        if isinstance(reason, MaxRetryError):
            reason = reason.reason
        else:
            break
    return reason if isinstance(reason, BaseException) else None


def says_out_of_credits(resp: requests.Response) -> bool:
    text = error_detail(resp).lower()
    return "insufficient balance" in text or "out of credits" in text or "insufficient credit" in text


def error_detail(resp: requests.Response) -> str:
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
