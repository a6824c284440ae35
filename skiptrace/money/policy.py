"""What every stage shares: the run's policy, the lease, the clock type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

Clock = Callable[[], dt.datetime]
PREDECESSOR_LABEL = "sanitized_retry_predecessor"
WAIT_FOR_OTHER_CALL_S = 1.0


@dataclass(frozen=True)
class Policy:
    force: bool = False
    fallback: bool = False
    retry_sanitized: bool = True

    @classmethod
    def default(cls) -> Policy:
        return cls(retry_sanitized=settings.SANITIZED_RETRY_ENABLED)


def lease_seconds() -> float:
    """How long a claim or a reservation may stay open before the reaper takes it back."""
    return 2 * settings.PROVIDER_TIMEOUT_S + 60
