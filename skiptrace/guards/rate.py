"""The rate guard: one permit per provider HTTP request under ``SKIP_TRACE_RPS``, fleet-wide.

pyrate-limiter 4: a SQLite bucket with its file lock on one host, ``PostgresBucket`` on PostgreSQL
(its connection built from Django's own database settings). Also the backoff of transient errors.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

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
    # A margin on the window: a permit whose entry is at t and a request arriving at the provider
    # up to PERMIT_MAX_AGE_S later (thread scheduling) must still fit the provider's own 1 s
    # windows, with 15 ms more for the moments between the last check (on the connection, see
    # skiptrace.provider.transport) and the write. 40 ms costs 3.8 % of throughput.
    margin_ms = int(PERMIT_MAX_AGE_S * 1000) + 15
    if float(rps).is_integer():
        rate = Rate(int(rps), Duration.SECOND + margin_ms)
    else:
        rate = Rate(1, int(1000 / rps) + margin_ms)
    if connection.vendor == "postgresql":
        from psycopg_pool import ConnectionPool

        conninfo = limiter_conninfo(connection.settings_dict)
        # One connection: one thread of a process asks at a time (rate_acquire), and the leaker
        # thread every 10 s. Autocommit: each ask is one statement, its own transaction.
        # synchronous_commit off: a permit's COMMIT does not wait for its WAL to reach the disk,
        # with the fleet's permit lock held until it ends (an entry lost in a PostgreSQL crash is a
        # permit of the last few milliseconds, the window's 1 s is over before the restart is).
        pool = ConnectionPool(conninfo, min_size=1, max_size=1, open=True,
                              kwargs={"autocommit": True, "options": "-c synchronous_commit=off"})
        bucket = one_trip_bucket_class()(pool, "convexa_provider", [rate])
        bucket.convexa_pool = pool
    else:
        from pyrate_limiter import SQLiteBucket

        path = str(settings.DATA_DIR / f"ratelimit-{connection.settings_dict['NAME'].rsplit('/', 1)[-1]}.sqlite")
        bucket = SQLiteBucket.init_from_file([rate], table="provider_requests", db_path=path, use_file_lock=True)
    return Limiter(bucket, buffer_ms=20)


def one_trip_bucket_class():
    """pyrate-limiter's ``PostgresBucket`` (its table, its leak, its window) with ``put`` in one
    round trip.

    Upstream's ``put`` takes ``LOCK TABLE ... NOWAIT`` and then counts, peeks and inserts in
    separate statements, and the limiter reads the clock with one more query: five round trips,
    with the table locked for four of them. With PostgreSQL 10 ms away that is ~40 ms a permit with
    the whole fleet locked out (a competitor's NOWAIT fails at once), so the fleet got ~20 permits
    a second whatever SKIP_TRACE_RPS said. Here one statement calls a function that takes a
    transaction-scoped advisory lock, counts the window and inserts, on the server's clock: the lock
    is held for microseconds, and a permit costs one round trip. The limiter's own clock is the
    local one with the database's offset (read every 30 s), used only for its leak schedule.
    """
    global _bucket_class
    if _bucket_class is None:
        _bucket_class = _make_bucket_class()
    return _bucket_class


_bucket_class = None


def _make_bucket_class():
    from psycopg import sql
    from pyrate_limiter import PostgresBucket
    from pyrate_limiter.abstracts.algorithm import ADMITTED, Decision
    from pyrate_limiter.buckets.postgres import advisory_lock_id
    from pyrate_limiter.clocks import AbstractClock

    class OffsetClock(AbstractClock):
        """The database's clock: from the asks' bounds (ServerOffset) once there are any, before
        that read once every 30 s and carried forward on the local one."""

        def __init__(self, pool) -> None:
            self.pool = pool
            self._offset_ms: float | None = None
            self._synced_at = 0.0

        def now(self) -> int:
            if (bounds := server_offset.bounds()) is not None:  # the asks bound it already: no query
                return int(1000.0 * time.monotonic() + (bounds[0] + bounds[1]) / 2)
            if self._offset_ms is None or time.monotonic() - self._synced_at > 30.0:
                try:
                    with self.pool.connection() as conn:
                        before = time.time()
                        db_ms = conn.execute("SELECT extract(epoch FROM clock_timestamp()) * 1000").fetchone()[0]
                        after = time.time()
                    self._offset_ms = float(db_ms) - 500.0 * (before + after)
                except Exception:  # keep the last offset (or none): the clock only schedules leaks
                    self._offset_ms = self._offset_ms or 0.0
                self._synced_at = time.monotonic()
            return int(time.time() * 1000 + self._offset_ms)

    class OneTripPostgresBucket(PostgresBucket):
        def __init__(self, pool, table, rates, algorithm=None) -> None:
            if len(rates) != 1:
                raise ValueError("one rate per bucket")
            super().__init__(pool, table, rates, algorithm)
            self._clock = OffsetClock(pool)
            # (`_put`, without post-dating, was the one before; CREATE OR REPLACE cannot change a
            # function's OUT columns: a change to them needs a new name or a DROP)
            self._function = f"{self._full_tbl}_put_at"
            rate = rates[0]
            body = sql.SQL("""
                CREATE OR REPLACE FUNCTION {function}(p_name varchar, p_weight integer, p_ahead_ms integer,
                                                      p_max_ahead_ms integer,
                                                      OUT granted boolean, OUT at_ms double precision,
                                                      OUT now_ms double precision)
                LANGUAGE plpgsql AS $body$
                DECLARE
                    now_ts timestamptz;
                    t timestamp;
                    over integer;
                    kth timestamp;
                BEGIN
                    PERFORM pg_advisory_xact_lock({lock});
                    -- read under the lock: the order of the grants; post-dated by p_ahead_ms (the
                    -- caller sends at that time, see rate_permit_fresh)
                    now_ts := clock_timestamp();
                    t := (now_ts + least(greatest(p_ahead_ms, 0), 1000) * interval '1 millisecond')::timestamp;
                    -- every entry from the window's start on, later ones included: a process that
                    -- post-dates less than another still never puts more than the limit in any window
                    over := (SELECT count(*) FROM {table} WHERE item_timestamp >= t - {interval}::integer
                             * interval '1 millisecond') + p_weight - {limit}::integer;
                    IF over > 0 AND p_max_ahead_ms > 0 AND p_weight <= {limit}::integer THEN
                        -- full: the first moment at which `over` of them are out of its window
                        SELECT item_timestamp INTO kth FROM {table}
                            WHERE item_timestamp >= t - {interval}::integer * interval '1 millisecond'
                            ORDER BY item_timestamp OFFSET over - 1 LIMIT 1;
                        t := kth + {interval}::integer * interval '1 millisecond' + interval '1 microsecond';
                        over := 0;
                    END IF;
                    at_ms := extract(epoch FROM t::timestamptz) * 1000;
                    now_ms := extract(epoch FROM now_ts) * 1000;
                    granted := over <= 0 AND t::timestamptz <= now_ts + least(greatest(p_max_ahead_ms,
                               p_ahead_ms, 0), 1000) * interval '1 millisecond';
                    IF granted THEN
                        INSERT INTO {table} (name, weight, item_timestamp)
                            SELECT p_name, p_weight, t FROM generate_series(1, p_weight);
                    END IF;
                END
                $body$
            """).format(function=sql.Identifier(self._function), table=sql.Identifier(self._full_tbl),
                        lock=sql.Literal(advisory_lock_id(self._full_tbl) + 1),
                        interval=sql.Literal(int(rate.interval)), limit=sql.Literal(int(rate.limit)))
            # One transaction: the advisory lock orders the processes that start together (two
            # concurrent CREATE OR REPLACE FUNCTION fail with "tuple concurrently updated").
            with self._get_conn() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_lock_id(self._full_tbl),))
                conn.execute(body)
            self._q_one_trip = sql.SQL("SELECT granted, at_ms, now_ms FROM {function}(%s, %s, %s, %s)").format(
                function=sql.Identifier(self._function))
            self._q_leak_server = sql.SQL(
                "DELETE FROM {table} WHERE item_timestamp < clock_timestamp()::timestamp - {keep}::integer "
                "* interval '1 millisecond'"
            ).format(table=sql.Identifier(self._full_tbl), keep=sql.Literal(2 * int(rate.interval) + 1000))

        def _create_table(self):
            # upstream's, inside a transaction: on this autocommit pool its advisory lock would
            # end with its own statement and two processes could race on CREATE TABLE
            with self._get_conn() as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_lock_id(self._full_tbl),))
                conn.execute(self._q_create_table)
                conn.execute(self._q_create_index)

        def put(self, item):
            if item.weight == 0:
                return self._record(item, ADMITTED)
            ahead, max_ahead = (PERMIT_AHEAD_MS, PERMIT_BOOK_AHEAD_MS) if server_offset.usable() else (0, 0)
            with self._get_conn() as conn:
                sent = time.monotonic()
                granted, at_ms, server_ms = conn.execute(
                    self._q_one_trip, (item.name, item.weight, ahead, max_ahead)).fetchone()
                server_offset.sample(sent, time.monotonic(), float(server_ms))
            last_permit.entry_ms, last_permit.ahead_ms = (float(at_ms), ahead) if granted else (None, 0)
            return self._record(item, ADMITTED if granted else Decision(failing_rate=self.rates[0]))

        def leak(self, current_timestamp=None):
            # On the server's clock, keeping twice the window: a host whose clock runs ahead can
            # never delete an entry that still counts.
            with self._get_conn() as conn:
                return conn.execute(self._q_leak_server).rowcount

    return OneTripPostgresBucket


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
    server_offset.reset()


_acquire_lock = threading.Lock()
# This thread's last permit: when it was asked for and granted (time.monotonic()), and on PostgreSQL
# the window entry's time (entry_ms, the server's epoch ms) and how far it was post-dated (ahead_ms).
last_permit = threading.local()
# A permit must be used at once: the window's 40 ms margin is all the lag it may have between its
# entry's time in the window and the request reaching the provider. On an overloaded host a thread
# was seen to wait 69 ms between its permit and its POST (not scheduled), and permits were granted
# up to 68 ms after the ask; the provider saw 5 requests within 1 s. Later than this just before
# the POST, the permit is left unused (it still counts in the window, so this only ever sends
# later) and another is taken, up to PERMIT_REFRESHES times.
PERMIT_MAX_AGE_S = 0.025
PERMIT_REFRESHES = 3
RATE_POLL_S = 0.01  # how often a process's waiting thread asks the limiter again
# On PostgreSQL a permit's entry is post-dated this far and its request waits for that time: with
# the database 5 ms away each way on a busy host, the answer to an ask took 18-45 ms (p10-p90), and
# a permit counted from its ask went stale before its POST one time in six (each a place in the
# window wasted: 80 % of SKIP_TRACE_RPS). Post-dated, a permit may leave from its entry's time
# (sure on the server's clock, see ServerOffset) until PERMIT_MAX_AGE_S after it.
PERMIT_AHEAD_MS = 50
# When the window is full, the permit is booked at the first moment it has room, up to this far
# ahead, and the request waits for it: no place in the window is left empty while the process's
# poller sleeps and asks again (RATE_POLL_S and a round trip, each time).
PERMIT_BOOK_AHEAD_MS = 120
OFFSET_MAX_SPREAD_MS = 12.0  # a wider bound on the server's clock than this: no post-dating


class ServerOffset:
    """Bounds on the database server's clock against this host's ``time.monotonic()``, from the
    limiter's own asks: each one read the server's clock between the moment it was sent and the
    moment its answer came, so ``server_ms - local_ms`` lies in ``[t - answered, t - sent]``. The
    bounds of the last ``KEEP_S`` seconds are intersected (NTP's idea, without its filters): with the
    database 5 ms away each way they are about 10 ms apart."""

    KEEP_S = 10

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # whole second of an answer -> [low, high] of that second's samples (a few buckets, not
        # a thousand samples to scan at every check)
        self._buckets: dict[int, list[float]] = {}
        self._newest: tuple[int, float, float] | None = None

    def sample(self, sent: float, answered: float, server_ms: float) -> None:
        low, high, second = server_ms - 1000.0 * answered, server_ms - 1000.0 * sent, int(answered)
        with self._lock:
            self._newest = (second, low, high)
            bucket = self._buckets.get(second)
            if bucket is None:
                self._buckets[second] = [low, high]
                for old in [k for k in self._buckets if k < second - self.KEEP_S]:
                    del self._buckets[old]
            else:
                bucket[0], bucket[1] = max(bucket[0], low), min(bucket[1], high)

    def bounds(self) -> tuple[float, float] | None:
        """``(low, high)``: server ms = local ms + an offset in that range; None if unknown or if
        the samples disagree (a clock was stepped: start again from the newest)."""
        with self._lock:
            if not self._buckets:
                return None
            low = max(b[0] for b in self._buckets.values())
            high = min(b[1] for b in self._buckets.values())
            if low > high:
                second, newest_low, newest_high = self._newest
                self._buckets = {second: [newest_low, newest_high]}
                return None
            return low, high

    def usable(self) -> bool:
        bounds = self.bounds()
        return bounds is not None and bounds[1] - bounds[0] <= OFFSET_MAX_SPREAD_MS

    def reset(self) -> None:
        with self._lock:
            self._buckets, self._newest = {}, None


server_offset = ServerOffset()


def send_window(entry_ms: float | None, ahead_ms: int) -> tuple[float, float] | None:
    """When (``time.monotonic()``, earliest and latest) a request on a permit whose window entry is
    at ``entry_ms`` on the server's clock may leave: from the moment the server's clock surely reads
    ``entry_ms`` until it surely reads no more than ``entry_ms + PERMIT_MAX_AGE_S``. None without
    bounds on the server's clock."""
    bounds = server_offset.bounds() if entry_ms is not None else None
    if bounds is None:
        return None
    low, high = bounds
    earliest = (entry_ms - low) / 1000.0 if ahead_ms else float("-inf")  # not post-dated: sent after its entry anyway
    return earliest, (entry_ms + 1000.0 * PERMIT_MAX_AGE_S - high) / 1000.0


def rate_acquire(timeout_s: float = 60.0) -> bool:
    """Block until a provider request may start under SKIP_TRACE_RPS (fleet-wide).

    One thread of a process asks the limiter at a time (see PERMIT_MAX_AGE_S for why the time
    between ask and grant matters): no thread waits for a pooled connection between the limiter's
    clock reading and its insert, and the database sees one attempt per process at a time.
    """
    limiter = rate_limiter()
    deadline = time.monotonic() + timeout_s
    # The thread holding the lock is the process's one poller; the others wait on the lock, not on
    # the database. When each waiting thread polled every 20 ms, 30 threads waiting for permits at
    # RPS 50 asked the database ~1,500 times a second, and PostgreSQL's CPU was the bottleneck.
    if not _acquire_lock.acquire(timeout=max(0.0, timeout_s)):
        return False
    try:
        while True:
            asked = time.monotonic()
            last_permit.entry_ms, last_permit.ahead_ms = None, 0  # the SQLite bucket sets neither
            if limiter.try_acquire("batchdata", blocking=False):
                last_permit.asked_at, last_permit.granted_at = asked, time.monotonic()
                return True
            if asked + RATE_POLL_S >= deadline:
                return False
            time.sleep(RATE_POLL_S)
    finally:
        _acquire_lock.release()


def _permit_fresh_now(sleep: Callable[[float], None] | None) -> bool:
    """Whether this thread's permit may be used now (after waiting for a post-dated one's time,
    unless ``sleep`` is None: then whether it is not too late yet)."""
    asked_at = getattr(last_permit, "asked_at", None)
    if asked_at is None:
        return True
    ahead = getattr(last_permit, "ahead_ms", 0)
    window = send_window(getattr(last_permit, "entry_ms", None), ahead)
    if window is not None:
        earliest, latest = window
        if sleep is not None and (wait := earliest - time.monotonic()) > 0:
            sleep(wait)
        if time.monotonic() <= latest:
            return True
    if ahead:  # post-dated: only its window says when it may go
        return False
    return time.monotonic() - asked_at <= PERMIT_MAX_AGE_S  # its entry is later than its ask


def rate_permit_fresh(sleep: Callable[[float], None] = time.sleep, *, wait: bool = True) -> None:
    """Called right before the request is written: a post-dated permit waits for its time; while
    this thread's permit is too late to use (see send_window; without bounds on the server's clock,
    older than PERMIT_MAX_AGE_S counted from when it was asked for), take another, at most
    PERMIT_REFRESHES times. ``wait=False`` (before ``requests`` prepares the POST): only replace a
    permit already too late, without waiting for its time. Never raises: should the limiter fail
    now, the request goes on the permit it has."""
    pause = sleep if wait else None
    for _ in range(PERMIT_REFRESHES):
        if _permit_fresh_now(pause):
            return
        asked_at = last_permit.asked_at
        log.info("rate permit %.0f ms old before its request left (its answer took %.0f ms, post-dated %d ms); "
                 "taking a fresh one", 1000 * (time.monotonic() - asked_at),
                 1000 * (getattr(last_permit, "granted_at", asked_at) - asked_at), getattr(last_permit, "ahead_ms", 0))
        try:
            if not rate_acquire():
                log.warning("no fresh rate permit within 60 s; the request goes on its old permit")
                return
        except Exception:  # the old permit was valid when granted
            log.warning("the rate limiter failed while refreshing a permit; the request goes on its old one",
                        exc_info=True)
            return
    if pause is not None and not _permit_fresh_now(pause):  # the last one refreshed: at least wait for its time
        _warn_late(time.monotonic() - last_permit.asked_at)


_late_warned_at = -1e9


def _warn_late(age_s: float) -> None:
    """A request goes on a permit still too late after PERMIT_REFRESHES fresh ones: say so, once a
    minute a process (each refresh cost a place in the window, and the request may reach the
    provider past the window's margin)."""
    global _late_warned_at
    if time.monotonic() - _late_warned_at < 60.0:
        return
    _late_warned_at = time.monotonic()
    bounds = server_offset.bounds()
    spread = f"{bounds[1] - bounds[0]:.0f} ms" if bounds else "unknown"
    log.warning("a provider request went on a rate permit %.0f ms after its ask, still late after %d fresh ones "
                "(the database server's clock is known to %s): keep PostgreSQL within ~10 ms of the workers, "
                "or the fleet sends fewer requests than SKIP_TRACE_RPS and may pass it by a few milliseconds",
                1000 * age_s, PERMIT_REFRESHES, spread)
