"""Reading a 2xx answer: ``parse_response`` maps it by position onto the requests (``v1`` or ``v3``
entries), reads ``matchCount``, and cross-checks the echoed requestId and address. Anything that does
not fit raises ``unreadable``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from skiptrace.provider import v1, v3
from skiptrace.provider.checks import is_count
from skiptrace.provider.model import (
    API_VERSIONS,
    TraceRequest,
    TraceResult,
    unreadable,
)

logger = logging.getLogger("convexa.provider")


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
        raise unreadable(f"body is {type(body).__name__}, not an object")
    top = "result" if version == "v3" else "results"
    list_key = "data" if version == "v3" else "persons"
    results_obj = body.get(top)
    if not isinstance(results_obj, dict):
        status = body.get("status")
        text = status.get("text") if isinstance(status, dict) else None
        raise unreadable(f"no {top} object" + (f" (status: {text})" if isinstance(text, str) else ""))
    entries = results_obj.get(list_key)
    if not isinstance(entries, list):
        raise unreadable(f"{top}.{list_key} is missing or not a list")
    if len(entries) != len(requests_):
        raise unreadable(f"{len(entries)} {top}.{list_key} entries for {len(requests_)} requests")

    read = v3.parse_entry if version == "v3" else v1.parse_person  # module attributes: a test may replace one
    parsed = [read(i, entry, req) for i, (entry, req) in enumerate(zip(entries, requests_, strict=True))]

    meta = results_obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise unreadable(f"{top}.meta is not an object")
    meta = meta or {}
    counts = meta.get("results")
    if counts is not None and not isinstance(counts, dict):
        raise unreadable(f"{top}.meta.results is not an object")
    computed = sum(1 for r in parsed if r.matched)
    raw_count = (counts or {}).get("matchCount")
    if raw_count is None:
        match_count = computed  # not sent: bill by what we see
    elif is_count(raw_count) and raw_count <= len(requests_):
        match_count = raw_count
        if raw_count != computed:
            logger.warning("batchdata matchCount=%d but %d entries look matched", raw_count, computed)
    else:
        raise unreadable(f"{top}.meta.results.matchCount is {raw_count!r} for {len(requests_)} requests")

    rid = meta.get("requestId")
    provider_request_id = (
        str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) and str(rid) else None
    )
    return parsed, match_count, provider_request_id


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
    return value if is_count(value) else None
