"""Wake idle worker threads as soon as work is queued, instead of when their poll comes round.

Idle threads used to sleep ``idle_sleep_s`` between claims, so a new run waited on average half of
that before its first claim (120 ms of a 440 ms cached 1,000-lead re-run, docs/PERFORMANCE.md).
Now one watcher per worker process waits for a sign that the database changed and wakes the threads:

- PostgreSQL: ``LISTEN skiptrace_work`` on the watcher's own connection. Whatever queues work calls
  ``notify_work()`` inside its transaction; PostgreSQL delivers the notification at commit, to every
  worker on every host, and never for a rolled-back transaction.
- SQLite: ``PRAGMA data_version`` changes whenever another connection commits. Reading it touches
  no table, so the watcher checks it every 20 ms.

The timed poll stays as the fallback (items whose ``not_before`` comes due, a lost connection), so a
missed signal costs latency, never work.
"""

from __future__ import annotations

import logging
import time

from django.db import connection

log = logging.getLogger("convexa.worker")

CHANNEL = "skiptrace_work"
SQLITE_CHECK_EVERY_S = 0.02


def notify_work() -> None:
    """Tell idle workers that items became claimable (call inside the transaction that queued them)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


class WorkSignal:
    """``wait(timeout)`` returns True when work may have been queued since the last call.

    Uses the calling thread's Django connection; made and used by one thread (the worker's main one).
    """

    def __init__(self) -> None:
        self._listener = None  # PostgreSQL: a connection of its own, outside the pool (it never goes back)
        self._data_version: int | None = None

    def wait(self, timeout: float) -> bool:
        try:
            if connection.vendor == "postgresql":
                return self._wait_postgresql(timeout)
            return self._wait_sqlite(timeout)
        except Exception as exc:  # a lost connection: reconnect on the next call; the poll covers the gap
            log.warning("work signal unavailable (%s); idle threads fall back to polling", type(exc).__name__)
            self.close()
            time.sleep(timeout)
            return False

    def _wait_postgresql(self, timeout: float) -> bool:
        if self._listener is None:
            import psycopg

            from skiptrace.guards.rate import limiter_conninfo

            self._listener = psycopg.connect(limiter_conninfo(connection.settings_dict), autocommit=True)
            self._listener.execute(f"LISTEN {CHANNEL}")
            return True  # anything queued before LISTEN was missed: look once
        # autocommit: notifications arrive between statements
        return any(True for _ in self._listener.notifies(timeout=timeout, stop_after=1))

    def _wait_sqlite(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with connection.cursor() as cursor:
                cursor.execute("PRAGMA data_version")
                version = cursor.fetchone()[0]
            changed, self._data_version = version != self._data_version, version
            if changed or time.monotonic() >= deadline:
                return changed
            time.sleep(min(SQLITE_CHECK_EVERY_S, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        listener, self._listener = self._listener, None
        self._data_version = None
        try:
            if listener is not None:
                listener.close()
            connection.close()
        except Exception:  # already gone
            pass
