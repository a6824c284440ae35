"""Benchmarks at BatchData's real limits: RPS 50, 64 requests in flight, batch 100, look-alike
latency 1 s (``scripts/bench.py --only highrate_pg,highrate_sqlite,rps_netem``).

The bound of a run is what the provider's limit allows: requests / RPS + one latency. Every
scenario records the ratio to it, the densest 1 s window the provider saw, the most requests in
flight, "database is locked" lines, and (PostgreSQL) the most sessions the workers and the web
server held at once, sampled every 50 ms from ``pg_stat_activity``.

``rps_netem`` puts the workers 10 ms (round trip) away from PostgreSQL. tc netem needs the kernel's
sch_netem, which this host lacks ("Specified qdisc kind is unknown"), so the workers reach
PostgreSQL through ``scripts/delay_proxy.py`` on loopback, which holds every chunk 5 ms each way.
Every loop is bounded by a deadline.

Helpers (WorkerProc, submit_and_wait, ...) come from ``scripts/bench.py``, which imports this module.
"""

from __future__ import annotations

import bisect
import csv
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import bench_leads

HIGH_RPS = 50
HIGH_CONCURRENCY = 64
HIGH_BATCH = 100
ENV = {"SKIP_TRACE_RPS": str(HIGH_RPS), "SKIP_TRACE_CONCURRENCY": str(HIGH_CONCURRENCY),
       "SKIP_TRACE_BATCH_SIZE": str(HIGH_BATCH)}


def _bench():
    return sys.modules["__main__"]


def write_leads(path: Path, start: int, n: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(bench_leads.HEADER)
        writer.writerows(bench_leads.lead_row(i, prefix="H") for i in range(start, start + n))
    return path


class SessionSampler(threading.Thread):
    """Most sessions on this database at once from anyone but this process (every 50 ms, bounded)."""

    def __init__(self, max_s: float = 900.0) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.peak_by_app: dict = {}
        self.samples = 0
        self.stop = threading.Event()
        self.max_s = max_s

    def run(self) -> None:
        import psycopg
        from django.db import connection

        from skiptrace.guards.rate import limiter_conninfo

        with psycopg.connect(limiter_conninfo(connection.settings_dict), autocommit=True) as conn:
            deadline = time.monotonic() + self.max_s
            while not self.stop.is_set() and time.monotonic() < deadline:
                n = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND client_port IS NOT NULL AND pid NOT IN "
                    "(SELECT pid FROM pg_stat_activity WHERE application_name = 'convexa-bench')"
                ).fetchone()[0]
                self.peak = max(self.peak, n)
                self.samples += 1
                time.sleep(0.05)


class Web:
    """The web server (`make serve`'s gunicorn.conf.py) with a light status load from 4 threads,
    counting 5xx answers while the run works."""

    def __init__(self, workdir: Path) -> None:
        b = _bench()
        self.port = b.free_port()
        env = dict(os.environ, ADMIN_TOKEN=b.ADMIN_TOKEN, LOG_LEVEL="warning", PORT=str(self.port))
        self._log = open(workdir / "gunicorn.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(Path(b.PY).parent / "gunicorn"), "-c", "gunicorn.conf.py", "convexa.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}"], cwd=b.ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        b.wait_port(self.port, 30)
        self.codes: dict[int, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def load(self, run_id: str) -> None:
        import requests

        b = _bench()
        url = f"http://127.0.0.1:{self.port}/api/skiptrace-runs/{run_id}/status"

        def work() -> None:
            session = requests.Session()
            deadline = time.monotonic() + 900
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    code = session.get(url, headers={"Authorization": f"Bearer {b.ADMIN_TOKEN}"}, timeout=30).status_code
                except Exception:  # counted, never raised
                    code = 0
                self.codes[code] = self.codes.get(code, 0) + 1
                time.sleep(0.05)

        self._threads = [threading.Thread(target=work, daemon=True) for _ in range(4)]
        for t in self._threads:
            t.start()

    def stop(self) -> dict:
        self._stop.set()
        for t in self._threads:
            t.join(35)
        _bench().stop_process(self.proc, timeout_s=15)
        self._log.close()
        return {"status_answers": {str(k): v for k, v in sorted(self.codes.items())},
                "status_5xx": sum(v for k, v in self.codes.items() if k >= 500 or k == 0)}


def _one_run(b, workdir: Path, label: str, csv_path: Path, n_workers: int, *, web: Web | None,
             sampler: SessionSampler | None, deadline_s: float) -> dict:
    from skiptrace.models import ProviderCall

    sandbox = b.sandbox_client(os.environ["BATCHDATA_BASE_URL"])
    # one `run_skiptrace_worker --processes N`: what a user runs on a host (its threads, the
    # concurrency, split across the N processes)
    workers = [b.WorkerProc(workdir, label.replace(" ", "-"), "--processes", str(n_workers))]
    try:
        for w in workers:
            w.wait_ready()
        sandbox.reset()
        if web is not None:
            web.codes.clear()
        started = threading.Event()

        def watch_run() -> None:  # start the status load as soon as the run exists
            from skiptrace.models import Run
            deadline = time.monotonic() + 120
            while web is not None and not started.is_set() and time.monotonic() < deadline:
                run = Run.objects.filter(source_label=label).order_by("-created_at").first()
                if run is not None:
                    web.load(run.run_id)
                    started.set()
                time.sleep(0.05)

        watcher = threading.Thread(target=watch_run, daemon=True)
        watcher.start()
        peak0 = sampler.peak if sampler else None
        if sampler:
            sampler.peak = 0
        res = b.submit_and_wait(csv_path, label, workers=workers, deadline_s=deadline_s)
        started.set()
        watcher.join(5)
        if sampler:
            res["pg_sessions_peak"] = sampler.peak
            sampler.peak = max(peak0 or 0, sampler.peak)
    finally:
        codes = [w.stop() for w in workers]
    st = sandbox.stats()
    requests_ = res["provider_requests"]
    finished = res["timeline"]["run finished"]
    bound = requests_ / HIGH_RPS + b.LATENCY_S if requests_ else None
    res.update({
        "worker_processes": n_workers, "worker_exit_codes": codes,
        "worker_cpu_s": "n/a (the supervisor's children are not counted)",
        "bound_s": round(bound, 2) if bound else None,
        "submit_to_finished_s": finished,
        "ratio_to_bound": round(finished / bound, 2) if bound and finished else None,
        "work_ratio_to_bound": round(res["work_s"] / bound, 2) if bound else None,
        "lock_errors": sum(w.lock_errors() for w in workers),
        "worker_errors": [e for w in workers for e in w.errors()][:5],
        "sandbox_requests": st["requests"], "max_in_any_1s_window": st["max_in_any_1s_window"],
        "max_concurrent": st["max_concurrent"], "max_item_key_count": max(st["item_keys"].values(), default=0),
        "calls": ProviderCall.objects.filter(run_id=res["run_id"]).count(),
    })
    return res


def sc_highrate(args, workdir: Path) -> dict:
    b = _bench()
    from django.db import connection

    b.migrate()
    pg = connection.vendor == "postgresql"
    if pg:
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = 'convexa-bench'")
    sizes = [2_000] if args.quick else ([20_000, 100_000] if pg else [20_000])
    if os.environ.get("BENCH_HIGHRATE_SIZES"):  # e.g. "20000" for a shorter look while tuning
        sizes = [int(n) for n in os.environ["BENCH_HIGHRATE_SIZES"].split(",")]
    n_workers = 2 if pg else 1
    out: dict = {"vendor": connection.vendor, "rps": HIGH_RPS, "concurrency": HIGH_CONCURRENCY,
                 "batch": HIGH_BATCH, "latency_s": b.LATENCY_S, "workers": n_workers,
                 "pool_max": os.environ.get("DATABASE_POOL_MAX", "default")}
    sampler = SessionSampler() if pg else None
    if sampler:
        sampler.start()
    web = Web(workdir)
    try:
        start = 0
        for n in sizes:
            csv_path = write_leads(workdir / f"leads-{n}.csv", start, n)
            start += n
            out[f"uncached_{n}"] = _one_run(b, workdir, f"highrate {n}", csv_path, n_workers, web=web,
                                            sampler=sampler, deadline_s=900)
            out[f"uncached_{n}"]["status_answers"] = {str(k): v for k, v in sorted(web.codes.items())}
        # the biggest list again: every lead is answered from the cache (L2; fresh workers)
        n = sizes[-1]
        csv_path = workdir / f"leads-{n}.csv"
        cached = _one_run(b, workdir, f"highrate cached {n}", csv_path, n_workers, web=web, sampler=sampler,
                          deadline_s=600)
        cached["work_leads_per_s"] = round(cached["leads"] / cached["work_s"]) if cached["work_s"] else None
        out[f"cached_{n}"] = cached
    finally:
        out["web"] = web.stop()
        if sampler:
            sampler.stop.set()
            sampler.join(5)
            out["pg_sessions_peak_overall"] = sampler.peak
            out["pg_session_samples"] = sampler.samples
    return out


# ---- rps_netem: PostgreSQL 10 ms away, 3 worker processes, 60 s at RPS 50 -------------------------------

def delay_proxy(b, listen: int, target: str, delay_ms: float) -> subprocess.Popen:
    """scripts/delay_proxy.py in a process of its own: PostgreSQL ``delay_ms`` away each way."""
    proc = subprocess.Popen([b.PY, str(b.ROOT / "scripts" / "delay_proxy.py"), "--listen", str(listen),
                             "--target", target, "--delay-ms", str(delay_ms)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b.wait_port(listen, 10)
    return proc


def measured_rtt_ms(port: int, dbname: str, user: str) -> float:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, dbname=dbname, user=user, autocommit=True) as conn:
        conn.execute("SELECT 1")
        t = time.perf_counter()
        for _ in range(20):
            conn.execute("SELECT 1").fetchone()
        return round(1000 * (time.perf_counter() - t) / 20, 2)


_POST_LINE = re.compile(r"(\d\d):(\d\d):(\d\d),(\d{3}) INFO convexa.provider batchdata POST .*?elapsed=([\d.]+)s")


def post_send_times(log_text: str) -> list[float]:
    """When a worker log's POSTs left: each is logged when its answer is in, with its elapsed time."""
    return sorted(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000 - float(e)
                  for h, m, s, ms, e in _POST_LINE.findall(log_text))


def densest_1s(times: list[float]) -> int:
    """The most of ``times`` (sorted) within any half-open 1 s."""
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def sc_rps_netem(args, workdir: Path) -> dict:
    b = _bench()
    from django.db import connection

    from skiptrace import runs

    b.migrate()
    duration_s = 15.0 if args.quick else 60.0
    batch = 10
    n_procs = 3
    n = int(HIGH_RPS * (duration_s + 15) * batch)
    out: dict = {"rps": HIGH_RPS, "batch": batch, "worker_processes": n_procs, "duration_s": duration_s,
                 "latency_s": b.LATENCY_S, "leads": n,
                 "network": "workers reach PostgreSQL through scripts/delay_proxy.py, 5 ms each way "
                            "(this kernel has no sch_netem for tc netem); the sandbox counts arrivals at "
                            "real-time priority (scripts/bench.py provider_priority)"}
    procs: list[subprocess.Popen] = []
    logs = []
    proxy = None
    db = connection.settings_dict
    pg_port = b.free_port()
    try:
        proxy = delay_proxy(b, pg_port, f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}", 5.0)
        out["select_1_round_trip_ms"] = measured_rtt_ms(pg_port, db["NAME"], db["USER"] or "postgres")
        env = dict(os.environ, **{**ENV, "SKIP_TRACE_BATCH_SIZE": str(batch)}, LOG_LEVEL="info",
                   DATABASE_URL=f"postgres://{db['USER'] or 'postgres'}@127.0.0.1:{pg_port}/{db['NAME']}")
        sandbox_url = os.environ["BATCHDATA_BASE_URL"]
        csv_path = write_leads(workdir / "netem.csv", 500_000, n)
        from skiptrace.intake import iter_csv_leads
        with csv_path.open("rb") as fh:
            run = runs.run_create(source_label="netem", leads=iter_csv_leads(fh), policy=runs.default_policy()).run
        sandbox = b.sandbox_client(sandbox_url)
        sandbox.reset()
        log = open(workdir / "netem-worker-0.log", "w")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(subprocess.Popen(
            [b.PY, "manage.py", "run_skiptrace_worker", "--processes", str(n_procs)],
            cwd=b.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s + 10:
            time.sleep(0.5)
            if any(p.poll() is not None for p in procs):
                break
        st = sandbox.stats()
    finally:
        for p in procs:
            b.stop_process(p, timeout_s=30)
        if proxy is not None:
            b.stop_process(proxy, timeout_s=5)
        for log in logs:
            log.close()
    times = sorted(st["request_times"])
    if not times:
        out["error"] = "no request reached the sandbox"
        return out
    first = times[0]
    # steady state: from 5 s after the first request for `duration_s` seconds
    lo, hi = first + 5.0, first + 5.0 + duration_s - 5.0
    steady = [t for t in times if lo <= t < hi]
    rate = len(steady) / (hi - lo)
    windows = b.rate_violations(times, HIGH_RPS)
    log_text = (workdir / "netem-worker-0.log").read_text(errors="replace")
    out.update({
        # the workers' own send times (a POST's log time less its elapsed time, to the millisecond)
        "max_sent_in_any_1s_window": densest_1s(post_send_times(log_text)),
        "stale_permits": log_text.count("taking a fresh one"),
        "run_id": run.run_id, "requests": len(times), "steady_window_s": round(hi - lo, 1),
        "steady_requests_per_s": round(rate, 2), "steady_pct_of_rps": round(100 * rate / HIGH_RPS, 1),
        "max_in_any_1s_window": st["max_in_any_1s_window"], "max_concurrent": st["max_concurrent"],
        "windows_over_rps": windows, "max_item_key_count": max(st["item_keys"].values(), default=0),
        "worker_errors": [ln[:300] for ln in log_text.splitlines()
                          if " ERROR " in ln or "Traceback" in ln][:5],
    })
    return out


SCENARIOS = {
    # name: (function, phases, env overrides, timeout_s, needs postgres)
    "highrate_pg": (sc_highrate, [None], ENV, 1500, True),
    "highrate_sqlite": (sc_highrate, [None], ENV, 900, False),
    "rps_netem": (sc_rps_netem, [None], ENV, 400, True),
}
