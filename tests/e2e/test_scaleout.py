"""Scale-out on PostgreSQL: three worker processes share one 5,000-lead run.

The proof behind "several workers on several hosts" (README, DATABASE_URL): with three
``run_skiptrace_worker`` processes claiming from one queue (``SKIP LOCKED``) every item is
processed exactly once, every normalized input reaches the provider exactly once, and the
fleet-wide rate and concurrency limits hold across processes. Speed (throughput with 1 vs 3
workers) is measured by ``scripts/bench.py --postgres``, not here.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.db.models import Count

from skiptrace.models import CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.runs import run_create
from skiptrace.service import Policy
from tests.e2e.test_worker import leads, start_worker, subprocess_env
from tests.helpers import densest_window, provider_send_times

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(connection.vendor != "postgresql",
                       reason="scale-out needs PostgreSQL (set DATABASE_URL): SQLite is one host, one writer"),
]

LEADS = 5000
BATCH = 100
RPS = 10
CONCURRENCY = 6


def test_three_worker_processes_work_one_run_each_item_once_within_rate_and_concurrency(sandbox, tmp_path):
    sandbox.update_config(latency_s=0.2)
    run = run_create(source_label="scale-out", leads=leads(LEADS, prefix="S"), policy=Policy()).run
    env = subprocess_env(
        sandbox.url, tmp_path, SKIP_TRACE_BATCH_SIZE=str(BATCH), SKIP_TRACE_RPS=str(RPS),
        SKIP_TRACE_CONCURRENCY=str(CONCURRENCY), LOG_LEVEL="info",
        SKIP_TRACE_DAILY_BUDGET_USD="1000.00",  # 5,000 x $0.07 worst case is past the default $200 cap
    )
    procs = [start_worker(env, "--exit-when-idle", "--processes", "1") for _ in range(3)]
    try:
        outputs = [p.communicate(timeout=80)[0] for p in procs]
    finally:
        for p in procs:  # only on a failure above: never leave a worker behind
            if p.poll() is None:
                p.kill()
                p.wait(10)
    assert [p.returncode for p in procs] == [0, 0, 0], [o[-2000:] for o in outputs]

    # Every item done, exactly once: one call per item, no item or signature with a second call.
    statuses = dict(RunItem.objects.filter(run=run).values_list("status").annotate(n=Count("id")))
    assert statuses == {ItemStatus.DONE: LEADS}
    calls = ProviderCall.objects.filter(run_id=run.run_id)
    assert calls.count() == LEADS
    assert set(calls.values_list("state", flat=True)) == {CallState.COMPLETED}
    assert not calls.values("item_id").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert not calls.values("signature").annotate(n=Count("id")).filter(n__gt=1).exists()
    assert RunItem.objects.filter(run=run, provider_call__item_id=None).count() == 0
    assert RunItem.objects.filter(run=run).values("provider_call").distinct().count() == LEADS

    # The provider saw each normalized input once, in full batches, within the fleet-wide limits.
    stats = sandbox.stats.snapshot()
    assert stats["items"] == LEADS
    assert max(stats["item_keys"].values()) == 1
    assert stats["requests"] == LEADS // BATCH
    assert stats["max_concurrent"] <= CONCURRENCY, stats["max_concurrent"]
    # The fleet-wide limiter: never more than RPS requests sent in any 1 s, across the 3 processes.
    sends = provider_send_times(outputs)
    assert len(sends) == LEADS // BATCH
    assert len(densest_window(sends)) <= RPS, densest_window(sends)
    # At the sandbox, which shares this loaded host (and this test's process), arrivals jitter by
    # tens of ms; the 50 ms margin absorbs most of it. A broken limiter (per process) would show
    # up to 3 x RPS here.
    arrivals = densest_window(stats["request_times"])
    assert len(arrivals) <= RPS + RPS // 2, (arrivals, densest_window(sends))

    # All three processes took part (the queue was shared, not drained by the first one up).
    posts = [len(re.findall(r"batchdata POST", out)) for out in outputs]
    assert sum(posts) == LEADS // BATCH, posts
    assert all(n > 0 for n in posts), posts

    run.refresh_from_db()
    assert run.state == "finished" and run.done == LEADS and run.failed == 0
    assert (tmp_path / run.run_id / "report.json").exists()
    assert (tmp_path / run.run_id / "enriched.csv").exists()
    assert Run.objects.filter(run_id=run.run_id, report_written_at__isnull=False).exists()

