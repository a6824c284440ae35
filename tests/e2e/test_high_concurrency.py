"""64 requests in flight (BatchData's real limits): database connections stay bounded, SQLite never
says "database is locked", every item is done exactly once and the concurrency cap holds.

Speeds at RPS 50 live in ``scripts/bench.py --only highrate_pg,highrate_sqlite,rps_netem`` (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from django.db.models import Count

from skiptrace.models import CallState, ItemStatus, ProviderCall, RunItem
from skiptrace.runs import run_create
from skiptrace.service import Policy
from tests.e2e.test_worker import leads, start_worker, subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

LEADS = 1500
BATCH = 10
CONCURRENCY = 64
POOL = 4


class ConnectionCounter(threading.Thread):
    """Samples, every 20 ms, the PostgreSQL sessions connected to the test database from other
    processes (the worker under test); bounded by its stop event and a 120 s ceiling."""

    def __init__(self, dbname: str) -> None:
        super().__init__(daemon=True)
        self.dbname = dbname
        self.peak = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        from skiptrace.guards.rate import limiter_conninfo

        with psycopg.connect(limiter_conninfo(connection.settings_dict), autocommit=True) as conn:
            me = conn.info.backend_pid
            deadline = time.monotonic() + 120
            while not self.stop.is_set() and time.monotonic() < deadline:
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s "
                    "AND pid <> ALL(%s)", (self.dbname, me, list(self.test_pids)),
                ).fetchone()[0]
                self.peak = max(self.peak, n)
                self.samples += 1
                time.sleep(0.02)

    test_pids: set[int] = set()


def test_64_in_flight_on_one_worker_every_item_once_no_lock_errors_and_few_connections(sandbox, tmp_path):
    sandbox.update_config(latency_s=0.5)
    run = run_create(source_label="high-concurrency", leads=leads(LEADS, prefix="H"), policy=Policy()).run
    env = subprocess_env(
        sandbox.url, tmp_path, SKIP_TRACE_BATCH_SIZE=str(BATCH), SKIP_TRACE_CONCURRENCY=str(CONCURRENCY),
        SKIP_TRACE_RPS="50", DATABASE_POOL_MAX=str(POOL), SKIP_TRACE_DAILY_BUDGET_USD="1000.00", LOG_LEVEL="info",
    )
    counter = None
    if connection.vendor == "postgresql":
        # this test process's own sessions (its pool, its limiter) are not the worker's
        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [connection.settings_dict["NAME"]])
            ConnectionCounter.test_pids = {row[0] for row in cursor.fetchall()}
        counter = ConnectionCounter(connection.settings_dict["NAME"])
        counter.start()
    proc = start_worker(env, "--exit-when-idle", "--processes", "1")
    try:
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if counter is not None:
            counter.stop.set()
            counter.join(10)
    assert proc.returncode == 0, output[-3000:]
    assert "database is locked" not in output, [ln for ln in output.splitlines() if "locked" in ln][:5]
    assert "Traceback" not in output and " ERROR " not in output, output[-3000:]

    assert dict(RunItem.objects.filter(run=run).values_list("status").annotate(n=Count("id"))) == {ItemStatus.DONE: LEADS}
    calls = ProviderCall.objects.filter(run_id=run.run_id)
    assert calls.count() == LEADS and set(calls.values_list("state", flat=True)) == {CallState.COMPLETED}
    assert not calls.values("signature").annotate(n=Count("id")).filter(n__gt=1).exists()
    stats = sandbox.stats.snapshot()
    assert stats["items"] == LEADS and max(stats["item_keys"].values()) == 1
    assert stats["max_concurrent"] <= CONCURRENCY
    # the concurrency was really used: many requests were in flight at once
    assert stats["max_concurrent"] >= 16, stats["max_concurrent"]

    if counter is not None:
        # Django's pool (POOL), the rate limiter's connection and the wake-up listener: not 64.
        assert counter.samples > 10
        assert 1 <= counter.peak <= POOL + 2, counter.peak
