"""Guards on the money path: provider readiness, budget, circuit breaker (fleet-wide, in the DB)."""

from __future__ import annotations

from django.conf import settings


def provider_status() -> str:
    """``ready`` | ``circuit_open`` | ``not_configured`` for /api/health."""
    if not settings.BATCHDATA_API_TOKEN:
        return "not_configured"
    return "ready"
