"""The money path's log lines: one line per call for each event (reserved, sent, completed, lost,
failed, unreadable, retry_sanitized) carrying its ids, and id ranges for the per-batch INFO lines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from skiptrace.models import ProviderCall

log = logging.getLogger("convexa.service")


def log_call(event: str, call_id: int | None, run_id: str | None, lead_id: str, *, level: int = logging.DEBUG,
             **extra: object) -> None:
    """One line for a money-path event of one call (or one item and the call it names), with every
    id needed to trace it, also as record attributes (``money_event``, ``provider_call_id``,
    ``run_id``, ``lead_id``) so that a reader (or a test) never has to parse the wording."""
    if not log.isEnabledFor(level):
        return
    tail = "".join(f" {k}={v}" for k, v in extra.items())
    log.log(level, "%s provider_call_id=%s run_id=%s lead_id=%s%s", event, call_id, run_id, lead_id, tail,
            extra={"money_event": event, "provider_call_id": call_id, "run_id": run_id, "lead_id": lead_id})


def log_calls(event: str, calls: Sequence[ProviderCall], **extra: object) -> None:
    """One DEBUG line per call for a money-path event (see ``log_call``)."""
    if not log.isEnabledFor(logging.DEBUG):
        return
    for call in calls:
        log_call(event, call.pk, call.run_id, call.lead_id, **extra)


def id_ranges(ids: Sequence[int]) -> str:
    """``1..4,9`` for log lines: every id stays findable without a 100-id line."""
    parts: list[tuple[int, int]] = []
    for n in sorted(ids):
        if parts and parts[-1][1] == n - 1:
            parts[-1] = (parts[-1][0], n)
        else:
            parts.append((n, n))
    return ",".join(f"{a}" if a == b else f"{a}..{b}" for a, b in parts)
