"""The fakes and steps the test files share: leads, a run created and worked in this thread, worker
processes on the test's database, the spend. One copy each (the fixtures are in ``conftest.py``,
the API assertions in ``helpers.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.db import connection
from django.db.models import Sum

from skiptrace.intake import LeadInput
from skiptrace.models import ProviderCall, Run
from skiptrace.money import Policy
from skiptrace.runs import run_create
from skiptrace.worker import Worker
from tests.conftest import PROVIDER_TOKEN

ROOT = Path(__file__).resolve().parent.parent
MAX_STEPS = 400  # every loop below is bounded


def leads(n: int, prefix: str = "L", street_word: str = "Oak", *, first_number: int = 100) -> list[LeadInput]:
    """``n`` distinct owners on distinct streets in Tampa (``prefix-0``, ``prefix-1``, …)."""
    return [
        LeadInput(lead_id=f"{prefix}-{i}", first_name="Pat", last_name=f"Owner{i}",
                  street=f"{first_number + i} {street_word} St", city="Tampa", state="FL", zip="33610")
        for i in range(n)
    ]


def create(clock, leads_: list[LeadInput], label: str = "test") -> Run:
    """A run of ``leads_`` created at the clock's time (default policy)."""
    return run_create(source_label=label, leads=leads_, policy=Policy(), now=clock()).run


def drain(worker: Worker | None = None, *, max_steps: int = MAX_STEPS) -> int:
    """Process batches until nothing is claimable now; returns how many batches ran."""
    worker = worker or Worker(concurrency=1)
    for n in range(max_steps):
        if not worker.process_one_batch():
            return n
    raise AssertionError("the queue never ran dry")


def api_create_run(client, leads_: list[dict], label: str = "test", **body) -> str:
    """``POST /api/skiptrace-runs``; returns the run_id (asserts a 200)."""
    response = client.post_json("/api/skiptrace-runs", {"source_label": label, "leads": leads_, **body})
    assert response.status_code == 200, response.content
    return response.json()["run_id"]


def spend_cents(run: Run | None = None) -> int:
    """``SUM(provider_calls.cost_cents)``, of one run or of everything."""
    calls = ProviderCall.objects.all() if run is None else ProviderCall.objects.filter(run_id=run.run_id)
    return calls.aggregate(s=Sum("cost_cents"))["s"] or 0


def subprocess_env(sandbox_url: str, reports: Path, **extra: str) -> dict[str, str]:
    """Environment for a worker process that shares this test's database and sandbox."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SQLITE_DB_PATH")}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    else:
        env["SQLITE_DB_PATH"] = str(db["NAME"])
    env.update(
        BATCHDATA_BASE_URL=sandbox_url, BATCHDATA_API_TOKEN=PROVIDER_TOKEN, RUN_REPORTS_DIR=str(reports),
        CONVEXA_IGNORE_DOTENV="1", SKIP_TRACE_RPS="1000", LOG_LEVEL="warning", PROVIDER_TIMEOUT_S="5",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_skiptrace_worker", *args], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
