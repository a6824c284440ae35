"""Serializing a check-then-act across processes (the budget, the breaker, the slots).
"""

from __future__ import annotations

from django.db import connection

_rows_made: set[tuple[str, str]] = set()  # (database, name) whose guard row this process has seen


def guard_row_exists(name: str) -> None:
    """Make the ``skiptrace_guards`` row once per process (a get_or_create inside a transaction is a
    SELECT, a SAVEPOINT and a RELEASE: three round trips a lock, every time)."""
    from skiptrace.models import GuardState

    key = (str(connection.settings_dict.get("NAME")), name)
    if key not in _rows_made:
        GuardState.objects.get_or_create(name=name)
        _rows_made.add(key)


def lock_row(name: str) -> None:
    """Serialize a check-then-act across processes: a row lock on PostgreSQL (SQLite is serial)."""
    from skiptrace.models import GuardState

    if connection.vendor == "postgresql":
        guard_row_exists(name)
        if not list(GuardState.objects.select_for_update().filter(name=name).values_list("pk", flat=True)):
            # deleted since (a test's flush): make it again and lock it
            _rows_made.discard((str(connection.settings_dict.get("NAME")), name))
            guard_row_exists(name)
            GuardState.objects.select_for_update().get(name=name)
