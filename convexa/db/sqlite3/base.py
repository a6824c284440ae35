"""Django's SQLite backend, with the write lock queued inside the process.

SQLite has one writer at a time. Its busy timeout makes a second writer retry with growing sleeps
and give up with "database is locked" after ``SQLITE_BUSY_TIMEOUT_MS``; it is neither first come,
first served nor aware of how many threads wait. With 64 worker threads and a web process on one
file that gave up dozens of times per run. Here every write transaction of this process (Django's
``atomic()``, which begins ``BEGIN IMMEDIATE``) and every write statement outside one first takes
one in-process lock, so a process's writers queue in Python and only one of them at a time ever
waits on SQLite, and then only for another process (the web server, a second worker). Reads in WAL
need no lock and do not queue.

The wait for the in-process lock is bounded (``SQLITE_WRITE_QUEUE_TIMEOUT_S``): past it the
statement fails with the usual ``OperationalError`` ("database is locked"), which callers already
treat as a busy database.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db.backends.sqlite3 import base as sqlite_base

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER")


def write_lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


def queue_timeout_s() -> float:
    return float(getattr(settings, "SQLITE_WRITE_QUEUE_TIMEOUT_S", 120.0))


class DatabaseWrapper(sqlite_base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._holds_write_lock = False
        self.write_waits = 0  # how many times this connection queued behind another thread (tests read it)

    # -- the lock --

    def acquire_write_lock(self) -> None:
        if self._holds_write_lock:
            return
        lock = write_lock(str(self.settings_dict["NAME"]))
        if not lock.acquire(blocking=False):
            self.write_waits += 1
            started = time.monotonic()
            if not lock.acquire(timeout=queue_timeout_s()):
                raise self.Database.OperationalError(
                    f"database is locked: waited {time.monotonic() - started:.0f} s behind this process's "
                    "other writers (SQLITE_WRITE_QUEUE_TIMEOUT_S)"
                )
        self._holds_write_lock = True

    def release_write_lock(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            write_lock(str(self.settings_dict["NAME"])).release()

    # -- transactions take it when they begin and give it back when they end --

    def _start_transaction_under_autocommit(self) -> None:
        self.acquire_write_lock()
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self.release_write_lock()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self.release_write_lock()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self.release_write_lock()

    def _close(self):
        try:
            return super()._close()
        finally:
            self.release_write_lock()

    def create_cursor(self, name=None):
        cursor = self.connection.cursor(factory=QueuedCursor)
        cursor.wrapper = self
        return cursor


class QueuedCursor(sqlite_base.SQLiteCursorWrapper):
    """A write statement outside a transaction (autocommit) queues for the lock too."""

    wrapper: DatabaseWrapper | None = None

    def _queued(self, query: str, run):
        wrapper = self.wrapper
        if (wrapper is None or wrapper._holds_write_lock or self.connection.in_transaction
                or not query.lstrip()[:7].upper().startswith(_WRITE_VERBS)):
            return run()
        wrapper.acquire_write_lock()
        try:
            return run()
        finally:
            wrapper.release_write_lock()

    def execute(self, query, params=None):
        return self._queued(query, lambda: super(QueuedCursor, self).execute(query, params))

    def executemany(self, query, param_list):
        return self._queued(query, lambda: super(QueuedCursor, self).executemany(query, param_list))
