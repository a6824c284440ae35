"""Serializing a check-then-act across processes (the budget, the breaker, the slots).
"""

from __future__ import annotations

from django.db import connection


def lock_row(name: str) -> None:
    """Serialize a check-then-act across processes: a row lock on PostgreSQL (SQLite is serial)."""
    from skiptrace.models import GuardState

    if connection.vendor == "postgresql":
        GuardState.objects.get_or_create(name=name)
        GuardState.objects.select_for_update().get(name=name)
