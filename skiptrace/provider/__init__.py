"""BatchData property skip-trace (V1 and V3): the one HTTP choke point to the paid provider.

This package builds the request body, sends exactly one HTTP request per call, and parses the
answer into plain dataclasses. One module per part:

- ``client``: ``BatchDataClient``, the one HTTP choke point (body, POST, status -> ``ProviderError``);
- ``parse``: ``parse_response`` (by position, ``matchCount``), with the ``v1`` and ``v3`` entry
  parsers and the shared ``checks`` (echoed requestId and address);
- ``cleaning``: phones to E.164, types, flags, ranks; emails; merging a lead's persons;
- ``model``: ``TraceRequest``, ``TraceResult``, ``Person``, ``Phone``, ``Email``, ``ProviderError``;
- ``redaction``: masks, ``sanitize_for_debug`` (stored JSON) and ``RedactFilter`` (log records).
 It knows no database and no Django models; only
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

from skiptrace.provider.checks import payload_hash
from skiptrace.provider.cleaning import to_e164
from skiptrace.provider.client import BatchDataClient, parse_retry_after
from skiptrace.provider.model import (
    API_VERSIONS,
    DEFAULT_BASE_URL,
    DEFAULT_PATH,
    ERROR_KINDS,
    MAX_BATCH,
    PROVIDER,
    TRANSIENT_KINDS,
    BatchResult,
    Email,
    Person,
    Phone,
    ProviderError,
    TraceRequest,
    TraceResult,
    api_version,
    unreadable,
)
from skiptrace.provider.parse import parse_response, readable_match_count
from skiptrace.provider.redaction import RedactFilter, mask_email, mask_phone, redact, sanitize_for_debug

__all__ = [
    "API_VERSIONS", "DEFAULT_BASE_URL", "DEFAULT_PATH", "ERROR_KINDS", "MAX_BATCH", "PROVIDER", "TRANSIENT_KINDS",
    "BatchDataClient", "BatchResult", "Email", "Person", "Phone", "ProviderError", "TraceRequest", "TraceResult",
    "api_version", "mask_email", "mask_phone", "parse_response", "parse_retry_after", "payload_hash",
    "readable_match_count", "RedactFilter", "redact", "sanitize_for_debug", "to_e164", "unreadable",
]
