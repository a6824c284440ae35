"""Database connections that do not grow with requests in flight.

On PostgreSQL every process draws its connections from Django's pool (``DATABASE_POOL_MAX``,
settings). A worker thread holds one only while it does database work: before it waits (for a
slot, a rate permit, the provider's answer, new work) it gives it back, so 64 requests in flight
need a handful of connections, not 64. SQLite has no connections to save; its writers queue in the
process instead (``convexa.db.sqlite3``).
"""

from __future__ import annotations

from django.db import connection


def release_connection() -> bool:
    """Give this thread's connection back to the pool before a wait (PostgreSQL with a pool, outside
    a transaction). True if one was given back. The next query takes one again (microseconds when
    the pool has one idle)."""
    if connection.vendor != "postgresql" or connection.connection is None or connection.in_atomic_block:
        return False
    if not connection.settings_dict.get("OPTIONS", {}).get("pool"):
        return False
    connection.close()
    return True
