"""Step 2, the cache: L1 (in process, 10 minutes) then L2 (``skiptrace_cache``, one ``IN`` query).

An answer serves an item unless the run forces a re-fetch of answers older than itself (``usable``).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from skiptrace.models import AttemptReason, CacheEntry, RunItem
from skiptrace.normalize import idempotency_key
from skiptrace.provider import PROVIDER


def cache_key(signature: str) -> str:
    """The L2 key of a signature: the idempotency key of its first call (the spec's key)."""
    return idempotency_key(signature, 0)


@dataclass(frozen=True)
class Answer:
    """What serves an item: a call's parsed contacts."""

    call_id: int | None
    contacts: dict
    payload_hash: str
    created_at: dt.datetime
    expires_at: dt.datetime
    stale: bool = False

    @property
    def has_contacts(self) -> bool:
        return bool(self.contacts.get("phones") or self.contacts.get("emails"))


class L1Cache:
    """A process-local dict with expiry (10 minutes, never beyond the L2 entry). It only saves a query."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._data: dict[str, tuple[dt.datetime, Answer]] = {}
        self._lock = threading.Lock()

    def get(self, signature: str, now: dt.datetime) -> Answer | None:
        with self._lock:
            hit = self._data.get(signature)
            if hit is None:
                return None
            until, answer = hit
            if now >= until or now >= answer.expires_at:
                del self._data[signature]
                return None
            return answer

    def put(self, signature: str, answer: Answer, now: dt.datetime) -> None:
        until = min(now + dt.timedelta(seconds=self.ttl_s), answer.expires_at)
        with self._lock:
            if len(self._data) > 200_000:  # bound memory on a huge run; L2 still answers
                self._data.clear()
            self._data[signature] = (until, answer)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


L1 = L1Cache(ttl_s=settings.L1_CACHE_TTL_S)


def answer_from_entry(entry: CacheEntry, now: dt.datetime) -> Answer:
    return Answer(
        call_id=entry.provider_call_id,
        contacts=json.loads(entry.parsed_contacts_json),
        payload_hash=entry.payload_hash,
        created_at=entry.created_at,
        expires_at=entry.ttl_expires_at,
        stale=entry.ttl_expires_at <= now,
    )


def cache_lookup(signatures: Iterable[str], now: dt.datetime, *, include_expired: bool = False,
                 entries: Iterable[CacheEntry] | None = None) -> dict[str, Answer]:
    """L1 then L2 (one ``IN`` query) for many signatures; expired entries only when asked.
    ``entries``: the L2 rows of these signatures, read already (``l2_query``)."""
    found: dict[str, Answer] = {}
    missing: list[str] = []
    for sig in set(signatures):
        answer = L1.get(sig, now)
        if answer is not None:
            found[sig] = answer
        else:
            missing.append(sig)
    if missing:
        if entries is None:
            entries = l2_query(missing)
        wanted = set(missing)
        for entry in entries:
            if entry.signature not in wanted:
                continue
            answer = answer_from_entry(entry, now)
            if not answer.stale:
                L1.put(entry.signature, answer, now)
                found[entry.signature] = answer
            elif include_expired:
                found[entry.signature] = answer
    return found


def l2_query(signatures: Iterable[str]):
    """The L2 cache rows of these signatures (a queryset: not run yet)."""
    return CacheEntry.objects.filter(provider=PROVIDER, idempotency_key__in=[cache_key(s) for s in set(signatures)])


def l1_misses(signatures: Iterable[str], now: dt.datetime) -> list[str]:
    """The signatures the in-process cache does not answer now."""
    return [sig for sig in set(signatures) if L1.get(sig, now) is None]


def usable(answer: Answer, item: RunItem) -> bool:
    """A cached answer serves an item unless the run forces a re-fetch of answers older than itself."""
    if item.run.policy_force and item.attempt_reason == AttemptReason.PRIMARY:
        return answer.created_at >= item.run.created_at
    return True
