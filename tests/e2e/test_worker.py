"""The worker against the sandbox: threads, processes, SIGTERM and SIGKILL.

These tests commit for real (``transaction=True``) because other threads and processes must see
the rows; they talk only to the sandbox on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone

from skiptrace.models import CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.runs import run_create
from skiptrace.service import Policy
from skiptrace.worker import Worker
from tests.fakes import ROOT, leads, start_worker, subprocess_env  # noqa: F401 - also imported from here

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_same_lead_from_several_threads_at_once_is_sent_once(sandbox):
    sandbox.update_config(latency_s=0.3)
    runs = [run_create(source_label=f"t{n}", leads=leads(1), policy=Policy()).run for n in range(5)]
    errors: list[BaseException] = []

    def work(run_id: str) -> None:
        try:
            worker = Worker(concurrency=1, run_id=run_id, idle_sleep_s=0.05)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and Run.objects.get(run_id=run_id).finished_at is None:
                if not worker.process_one_batch():
                    time.sleep(0.05)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work, args=(r.run_id,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    stats = sandbox.stats.snapshot()
    assert stats["items"] == 1, stats["item_keys"]
    assert ProviderCall.objects.count() == 1
    assert set(RunItem.objects.values_list("status", flat=True)) == {ItemStatus.DONE}


def test_an_idle_worker_starts_a_new_run_at_once_not_at_its_next_poll(sandbox):
    worker = Worker(concurrency=2, idle_sleep_s=120)  # the fallback poll alone would wait two minutes
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # both threads found nothing and are idle
        run_id = run_create(source_label="late", leads=leads(3), policy=Policy()).run.run_id
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Run.objects.get(run_id=run_id).finished_at is None:
            time.sleep(0.05)
        run = Run.objects.get(run_id=run_id)
        assert run.finished_at is not None and run.done == 3, (run.state, run.done)
    finally:
        worker.shutdown = True
        thread.join(30)
    assert not thread.is_alive()  # shutdown wakes idle threads too


def test_two_worker_processes_share_one_queue_and_send_each_input_once(sandbox, tmp_path):
    sandbox.update_config(latency_s=0.1)
    for n in range(3):  # three runs of the same 60 leads: 60 inputs, 180 items
        run_create(source_label=f"r{n}", leads=leads(60), policy=Policy())
    env = subprocess_env(sandbox.url, tmp_path, SKIP_TRACE_BATCH_SIZE="10")
    procs = [start_worker(env, "--exit-when-idle", "--concurrency", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stats = sandbox.stats.snapshot()
    assert stats["items"] == 60 and max(stats["item_keys"].values()) == 1
    assert RunItem.objects.filter(status=ItemStatus.DONE).count() == 180
    assert Run.objects.filter(finished_at__isnull=False).count() == 3
    assert ProviderCall.objects.count() == 60


def test_sigterm_finishes_the_request_in_flight_and_exits_zero(sandbox, tmp_path):
    sandbox.update_config(latency_s=1.5)
    run = run_create(source_label="t", leads=leads(5), policy=Policy()).run
    proc = start_worker(subprocess_env(sandbox.url, tmp_path), "--concurrency", "1")
    deadline = time.monotonic() + 20
    while sandbox.stats.snapshot()["current_concurrent"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert not ProviderCall.objects.filter(state__in=[CallState.SENT, CallState.RESERVED]).exists()
    assert set(RunItem.objects.filter(run=run).values_list("status", flat=True)) == {ItemStatus.DONE}


def test_sigkill_mid_run_then_restart_finishes_without_sending_anything_twice(sandbox, tmp_path):
    sandbox.update_config(latency_s=0.4)
    run = run_create(source_label="crash", leads=leads(200), policy=Policy()).run
    env = subprocess_env(sandbox.url, tmp_path, SKIP_TRACE_BATCH_SIZE="20")
    proc = start_worker(env, "--concurrency", "3")
    deadline = time.monotonic() + 30
    while sandbox.stats.snapshot()["requests"] < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()  # SIGKILL: no cleanup at all
    proc.wait(10)
    assert RunItem.objects.filter(run=run, status=ItemStatus.IN_FLIGHT).exists()
    # Time passes (instead of sleeping through the lease): every lease the dead worker held expires.
    past = timezone.now() - dt.timedelta(seconds=1)
    RunItem.objects.filter(status=ItemStatus.IN_FLIGHT).update(lease_until=past)
    ProviderCall.objects.filter(state__in=[CallState.SENT, CallState.RESERVED]).update(lease_until=past)
    proc = start_worker(env, "--exit-when-idle", "--concurrency", "3")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out

    run.refresh_from_db()
    assert run.state == "finished"
    assert not RunItem.objects.filter(run=run, status__in=[ItemStatus.IN_FLIGHT, ItemStatus.QUEUED]).exists()
    stats = sandbox.stats.snapshot()
    assert max(stats["item_keys"].values()) == 1  # no normalized input reached the provider twice
    assert stats["items"] <= ProviderCall.objects.exclude(state=CallState.ERRORED).count()
    for item in RunItem.objects.filter(run=run, status=ItemStatus.FAILED):
        assert item.last_error.startswith("provider_outcome_unknown")
        assert item.provider_call.state == CallState.LOST
    assert (Path(settings.RUN_REPORTS_DIR) / run.run_id).exists() or (tmp_path / run.run_id / "report.json").exists()
