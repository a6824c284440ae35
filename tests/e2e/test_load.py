"""Read load while a run is being worked: gunicorn (2 workers x 4 threads) and a worker process on
the test database, the worker working a 500-lead run against the sandbox, and 8 threads reading
run status and lead contacts (at most 10 s or 3,000 requests). Zero error responses, zero
"database is locked" anywhere; the rate is printed. Only 127.0.0.1; every process is stopped.

The helpers live in ``scripts/load.py``, which also runs the same by hand.
"""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.runs import run_create
from skiptrace.service import Policy
from tests.conftest import ADMIN_TOKEN
from tests.e2e.test_worker import ROOT, leads, subprocess_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

_spec = importlib.util.spec_from_file_location("convexa_load_script", ROOT / "scripts" / "load.py")
load = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load)

LEADS = 500


def test_status_and_contacts_under_concurrent_reads_while_a_worker_writes(sandbox, tmp_path, capsys,
                                                                           record_property):
    sandbox.update_config(latency_s=0.1)
    run = run_create(source_label="load", leads=leads(LEADS, prefix="LD"), policy=Policy()).run
    # Small batches: many write transactions while the API reads (the contention we look for).
    env = subprocess_env(sandbox.url, tmp_path, ADMIN_TOKEN=ADMIN_TOKEN, SKIP_TRACE_BATCH_SIZE="10",
                         DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    port = load.free_port()
    base = f"http://127.0.0.1:{port}"
    logs = [tmp_path / "gunicorn.log", tmp_path / "worker.log"]
    gunicorn = worker = None
    try:
        gunicorn = load.start_gunicorn(env, port, logs[0], workers=2, threads=4)
        load.wait_ready(base, gunicorn, timeout_s=60)
        worker = load.start_worker(env, logs[1], "--concurrency", "2")
        # the worker is working (bounded wait) before the load starts
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sandbox.stats.snapshot()["requests"] == 0:
            time.sleep(0.05)
        assert sandbox.stats.snapshot()["requests"] > 0, logs[1].read_text()
        lead_ids = [f"LD-{i}" for i in range(0, LEADS, 5)]
        result = load.hammer(base, ADMIN_TOKEN, load.run_paths(run.run_id, lead_ids),
                             threads=8, duration_s=10.0, max_requests=3000)
        done_during = RunItem.objects.filter(run=run, status=ItemStatus.DONE).count()
        writes_during_load = sandbox.stats.snapshot()["requests"]
    finally:
        worker_rc = load.stop(worker)
        gunicorn_rc = load.stop(gunicorn)
    outputs = {p.name: p.read_text(errors="replace") for p in logs}
    result.update(done_when_load_ended=done_during, provider_requests=writes_during_load,
                  run_finished=Run.objects.get(pk=run.pk).finished_at is not None)
    record_property("load", json.dumps(result))
    with capsys.disabled():  # the rate is the point of this test: always show it
        print(f"\nLOAD {result['requests']} requests in {result['elapsed_s']}s = {result['rps']} req/s, "
              f"errors {result['errors']}, p95 {result['latency_ms']['p95']} ms, "
              f"worker done {done_during}/{LEADS} items meanwhile")

    assert result["requests"] >= 100, result
    assert result["errors"] == 0, result["error_samples"]
    assert set(result["statuses"]) == {"200"}
    for name, text in outputs.items():
        assert "database is locked" not in text.lower(), (name, text[-3000:])
        assert "Traceback" not in text, (name, text[-3000:])
    assert worker_rc == 0 and gunicorn_rc == 0, (worker_rc, gunicorn_rc, outputs)
    assert done_during > 0  # the reads really ran alongside the worker's writes
