"""The rate guard: one permit per provider HTTP request under ``SKIP_TRACE_RPS``, fleet-wide.

pyrate-limiter 4: a SQLite bucket with its file lock on one host, ``PostgresBucket`` on PostgreSQL
(its connection built from Django's own database settings). Also the backoff of transient errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from django.conf import settings
from django.db import connection

log = logging.getLogger("convexa.guards")


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for transient provider errors: 2, 4, 8 ... capped at 5 min."""
    base = min(300.0, 2.0 ** max(1, attempt))
    return base * (0.8 + 0.4 * random.random())


def rate_limited_backoff() -> float:
    return backoff_seconds(2)


# --- concurrency gate and rate limit ---------------------------------------------------------------

_limiter_lock = threading.Lock()
_limiter = None


def rate_limiter():
    """One pyrate-limiter per process, its bucket shared by every process through the database."""
    global _limiter
    with _limiter_lock:
        if _limiter is None:
            _limiter = _build_limiter()
        return _limiter


def _build_limiter():
    from pyrate_limiter import Duration, Limiter, Rate

    rps = settings.SKIP_TRACE_RPS
    # A 50 ms margin on the window: a permit taken at t and a request arriving at the provider up
    # to 50 ms later (thread scheduling, connection set-up) must still fit the provider's own 1 s
    # windows. It costs ~5 % of throughput; BatchData's 3,000/min account limit is far above RPS.
    margin_ms = 50
    if float(rps).is_integer():
        rate = Rate(int(rps), Duration.SECOND + margin_ms)
    else:
        rate = Rate(1, int(1000 / rps) + margin_ms)
    if connection.vendor == "postgresql":
        from psycopg_pool import ConnectionPool
        from pyrate_limiter import PostgresBucket

        conninfo = limiter_conninfo(connection.settings_dict)
        # Not autocommit: the bucket's LOCK TABLE must run inside the transaction that
        # pool.connection() opens and commits.
        pool = ConnectionPool(conninfo, min_size=1, max_size=2, open=True)  # one asking thread at a time
        bucket = PostgresBucket(pool, "convexa_provider", [rate])
        bucket.convexa_pool = pool
    else:
        from pyrate_limiter import SQLiteBucket

        path = str(settings.DATA_DIR / f"ratelimit-{connection.settings_dict['NAME'].rsplit('/', 1)[-1]}.sqlite")
        bucket = SQLiteBucket.init_from_file([rate], table="provider_requests", db_path=path, use_file_lock=True)
    return Limiter(bucket, buffer_ms=20)


# OPTIONS keys Django's PostgreSQL backend reads itself; every other one is a libpq parameter.
_DJANGO_ONLY_OPTIONS = {"isolation_level", "server_side_binding", "pool", "assume_role", "cursor_factory",
                        "context", "prepare_threshold"}


def limiter_conninfo(settings_dict: dict) -> str:
    """The limiter's libpq connection string, from the same settings as Django's own connection
    (``NAME``, ``USER``, ``PASSWORD``, ``HOST``, ``PORT`` and libpq ``OPTIONS`` such as ``sslmode``),
    quoted by psycopg (a password with a space or a quote still connects)."""
    from psycopg.conninfo import make_conninfo

    params = {key: settings_dict.get(name) for key, name in (
        ("dbname", "NAME"), ("user", "USER"), ("password", "PASSWORD"), ("host", "HOST"), ("port", "PORT"))}
    for key, value in (settings_dict.get("OPTIONS") or {}).items():
        if key not in _DJANGO_ONLY_OPTIONS and isinstance(value, (str, int)) and not isinstance(value, bool):
            params[key] = value
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v not in (None, "")})


def reset_rate_limiter() -> None:
    """Forget the process's limiter (tests that change SKIP_TRACE_RPS)."""
    global _limiter
    with _limiter_lock:
        if _limiter is not None:
            for bucket in _limiter.buckets():
                pool = getattr(bucket, "convexa_pool", None)
                if pool is not None:
                    pool.close()
        _limiter = None


_acquire_lock = threading.Lock()
last_permit = threading.local()  # when this thread asked for its last permit (time.monotonic())
# A permit must be used at once: the window's 50 ms margin is all the lag it may have between the
# limiter's clock reading (somewhere after the ask) and the request reaching the provider. On an
# overloaded host a thread was seen to wait 69 ms between its permit and its POST (not scheduled),
# and permits were granted up to 68 ms after the ask; the provider saw 5 requests within 1 s.
# Older than this just before the POST, counted from the ask, the permit is left unused (it still
# counts in the window, so this only ever sends later) and another is taken, up to
# PERMIT_REFRESHES times.
PERMIT_MAX_AGE_S = 0.025
PERMIT_REFRESHES = 3


def rate_acquire(timeout_s: float = 60.0) -> bool:
    """Block until a provider request may start under SKIP_TRACE_RPS (fleet-wide).

    One thread of a process asks the limiter at a time (see PERMIT_MAX_AGE_S for why the time
    between ask and grant matters): no thread waits for a pooled connection between the limiter's
    clock reading and its insert, and the database sees one attempt per process at a time.
    """
    limiter = rate_limiter()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with _acquire_lock:
            asked = time.monotonic()
            if limiter.try_acquire("batchdata", blocking=False):
                last_permit.asked_at = asked
                return True
        time.sleep(0.02)
    return False


def rate_permit_fresh(max_age_s: float = PERMIT_MAX_AGE_S) -> None:
    """Called right before the POST: while this thread's permit is older than ``max_age_s``
    (counted from when it was asked for), take another, at most PERMIT_REFRESHES times. Never
    raises: should the limiter fail now, the request goes on the permit it has."""
    for _ in range(PERMIT_REFRESHES):
        asked_at = getattr(last_permit, "asked_at", None)
        if asked_at is None or time.monotonic() - asked_at <= max_age_s:
            return
        log.info("rate permit %.0f ms old before its request left; taking a fresh one",
                 1000 * (time.monotonic() - asked_at))
        try:
            if not rate_acquire():
                log.warning("no fresh rate permit within 60 s; the request goes on its old permit")
                return
        except Exception:  # the old permit was valid when granted
            log.warning("the rate limiter failed while refreshing a permit; the request goes on its old one",
                        exc_info=True)
            return
