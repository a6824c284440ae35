#!/usr/bin/env python3
"""Read load on the API while a run is being worked: run status and lead contacts, concurrently.

Every loop is bounded (``--duration`` seconds or ``--max-requests``, whichever comes first) and
only loopback is used. Prints one JSON summary (requests, errors, req/s, latency percentiles) and
exits 1 on any error response or any "database is locked" in the processes' output.

Against a server you started yourself (``make serve`` and ``make worker``)::

    .venv/bin/python scripts/load.py --url http://127.0.0.1:6001 --token "$ADMIN_TOKEN" --run RUN_ID \\
        [--lead LEAD_ID ...]        # default: the lead ids of the run's latest provider calls

All in one, on a throwaway SQLite database (or on ``DATABASE_URL`` if set): the bundled sandbox,
gunicorn (2 workers x 4 threads), a worker process and a run of ``--leads`` leads created through
the API, then the load, then everything is stopped::

    .venv/bin/python scripts/load.py --self-contained --leads 500

``tests/e2e/test_load.py`` uses the same functions against the test database.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCKED = "database is locked"


# --- the load ------------------------------------------------------------------------------------


def hammer(
    base_url: str,
    token: str,
    paths: Sequence[str],
    *,
    threads: int = 8,
    duration_s: float = 10.0,
    max_requests: int = 3000,
    timeout_s: float = 10.0,
) -> dict:
    """GET ``paths`` round-robin from ``threads`` threads until ``duration_s`` or ``max_requests``.

    A response is an error unless it is 200 with a JSON body; exceptions (timeouts, resets) are
    errors too. Returns a summary dict.
    """
    if not paths:
        raise ValueError("no paths to request")
    if not base_url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        raise ValueError(f"loopback only: {base_url}")
    lock = threading.Lock()
    tickets = itertools.count()
    cycle = itertools.cycle(paths)
    statuses: Counter = Counter()
    latencies: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    deadline = started + duration_s

    def worker() -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        try:
            while time.monotonic() < deadline:
                with lock:
                    if next(tickets) >= max_requests:
                        return
                    path = next(cycle)
                t0 = time.monotonic()
                try:
                    resp = session.get(base_url + path, timeout=timeout_s)
                    ok = resp.status_code == 200 and resp.headers.get("Content-Type", "").startswith("application/json")
                    if ok:
                        resp.json()
                    outcome = str(resp.status_code)
                    detail = "" if ok else f"{path} -> {resp.status_code} {resp.text[:200]!r}"
                except (requests.RequestException, ValueError) as exc:
                    ok, outcome, detail = False, type(exc).__name__, f"{path} -> {exc!r}"[:300]
                elapsed = time.monotonic() - t0
                with lock:
                    statuses[outcome] += 1
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(detail)
        finally:
            session.close()

    pool = [threading.Thread(target=worker, name=f"load-{n}", daemon=True) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(duration_s + timeout_s + 5)  # bounded even if a request hangs
    elapsed = time.monotonic() - started
    done = sum(statuses.values())
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1) if ordered else 0.0

    return {
        "requests": done,
        "errors": len(errors),
        "error_samples": errors[:10],
        "statuses": dict(statuses),
        "elapsed_s": round(elapsed, 2),
        "rps": round(done / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99),
                       "max": round(1000 * ordered[-1], 1) if ordered else 0.0,
                       "mean": round(1000 * statistics.fmean(ordered), 1) if ordered else 0.0},
        "threads": threads,
        "stopped_by": "max_requests" if done >= max_requests else "duration",
    }


def run_paths(run_id: str, lead_ids: Sequence[str]) -> list[str]:
    """Status of the run interleaved with the contacts of its leads."""
    paths = []
    for lead_id in lead_ids:
        paths.append(f"/api/skiptrace-runs/{run_id}/status")
        paths.append(f"/api/leads/{lead_id}/contacts")
    return paths or [f"/api/skiptrace-runs/{run_id}/status"]


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    try:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    finally:
        log.close()


def start_gunicorn(env: dict[str, str], port: int, log_path: Path, *, workers: int = 2, threads: int = 4) -> subprocess.Popen:
    # The repository's gunicorn.conf.py (its access-log format), with this test's bind and sizes.
    return _spawn([str(BIN / "gunicorn"), "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
                   "--workers", str(workers), "--threads", str(threads), "--timeout", "60"], env, log_path)


def start_worker(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen:
    return _spawn([sys.executable, "manage.py", "run_skiptrace_worker", *args], env, log_path)


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            if requests.get(base_url + "/api/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not answer /api/health within {timeout_s}s")


def stop(proc: subprocess.Popen | None, *, grace_s: float = 15.0) -> int | None:
    """SIGTERM the process (and its session: gunicorn's workers), then SIGKILL after ``grace_s``."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait(10)
    return proc.returncode


def locked_count(*paths: Path) -> int:
    return sum(p.read_text(errors="replace").lower().count(LOCKED) for p in paths if p.exists())


# --- modes ---------------------------------------------------------------------------------------


def _leads_of_latest_calls(base_url: str, token: str, run_id: str) -> list[str]:
    resp = requests.get(f"{base_url}/api/debug/skiptrace-latest", params={"limit": 200},
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)
    resp.raise_for_status()
    return sorted({c["lead_id"] for c in resp.json().get("calls", []) if c.get("run_id") == run_id})


def self_contained(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    from skiptrace.sandbox import SandboxConfig, SandboxServer  # standard library only

    token, provider_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    work = Path(tempfile.mkdtemp(prefix="convexa-load-"))
    sandbox = SandboxServer(config=SandboxConfig(token=provider_token, latency_s=args.latency)).start()
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_DB_PATH"}
    if "DATABASE_URL" not in env:
        env["SQLITE_DB_PATH"] = str(work / "load.db")
    env.update(ADMIN_TOKEN=token, BATCHDATA_API_TOKEN=provider_token, BATCHDATA_BASE_URL=sandbox.url,
               RUN_REPORTS_DIR=str(work / "run_reports"), CONVEXA_IGNORE_DOTENV="1", LOG_LEVEL="warning",
               SKIP_TRACE_BATCH_SIZE=str(args.batch_size), SKIP_TRACE_RPS="1000")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    gunicorn = worker = None
    logs = [work / "gunicorn.log", work / "worker.log"]
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
        gunicorn = start_gunicorn(env, port, logs[0])
        wait_ready(base, gunicorn)
        leads = [{"lead_id": f"LOAD-{i}", "first_name": "Pat", "last_name": f"Owner{i}", "street": f"{100 + i} Oak St",
                  "city": "Tampa", "state": "FL", "zip": "33610"} for i in range(args.leads)]
        resp = requests.post(f"{base}/api/skiptrace-runs", json={"source_label": "load", "leads": leads},
                             headers={"Authorization": f"Bearer {token}"}, timeout=60)
        resp.raise_for_status()
        run_id = resp.json()["run_id"]
        worker = start_worker(env, logs[1], "--concurrency", str(args.worker_concurrency))
        deadline = time.monotonic() + 30  # the load starts once the worker is working (bounded wait)
        while time.monotonic() < deadline and sandbox.stats.snapshot()["requests"] == 0 and worker.poll() is None:
            time.sleep(0.05)
        result = hammer(base, token, run_paths(run_id, [lead["lead_id"] for lead in leads[: args.contact_leads]]),
                        threads=args.threads, duration_s=args.duration, max_requests=args.max_requests)
        status = requests.get(f"{base}/api/skiptrace-runs/{run_id}/status",
                              headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        result.update(run_id=run_id, run_state_after=status.get("state"), run_done_after=status.get("done"),
                      workdir=str(work) if args.keep else None)
    finally:
        stop(worker)
        stop(gunicorn)
        sandbox.stop()
        locked = locked_count(*logs)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["database_is_locked"] = locked
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="base URL of a running server (loopback)")
    parser.add_argument("--token", default=os.environ.get("ADMIN_TOKEN"), help="admin token (default $ADMIN_TOKEN)")
    parser.add_argument("--run", help="run_id whose status to poll")
    parser.add_argument("--lead", action="append", default=[], help="a lead id whose contacts to read (repeatable)")
    parser.add_argument("--self-contained", action="store_true", help="start sandbox, gunicorn, worker and a run")
    parser.add_argument("--leads", type=int, default=500, help="self-contained: leads in the run")
    parser.add_argument("--batch-size", type=int, default=10, help="self-contained: SKIP_TRACE_BATCH_SIZE")
    parser.add_argument("--latency", type=float, default=0.1, help="self-contained: sandbox latency (s)")
    parser.add_argument("--worker-concurrency", type=int, default=2, help="self-contained: worker threads")
    parser.add_argument("--contact-leads", type=int, default=100, help="self-contained: leads whose contacts to read")
    parser.add_argument("--keep", action="store_true", help="self-contained: keep the work folder (db, logs)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10.0, help="at most this many seconds")
    parser.add_argument("--max-requests", type=int, default=3000, help="at most this many requests")
    args = parser.parse_args(argv)
    if args.self_contained:
        result = self_contained(args)
    else:
        if not (args.url and args.token and args.run):
            parser.error("--url, --token and --run are required (or use --self-contained)")
        url = args.url.rstrip("/")
        leads = args.lead or _leads_of_latest_calls(url, args.token, args.run)
        result = hammer(url, args.token, run_paths(args.run, leads), threads=args.threads,
                        duration_s=args.duration, max_requests=args.max_requests)
        result["database_is_locked"] = 0  # not our processes: check your server's log
    print(json.dumps(result, indent=2))
    return 1 if result["errors"] or result["database_is_locked"] else 0


if __name__ == "__main__":
    sys.exit(main())
