"""The sandbox's knobs (``SandboxConfig``: faults, rates, latency, seed) and what it counts (``SandboxStats``).
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
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
