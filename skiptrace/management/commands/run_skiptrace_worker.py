from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from skiptrace.worker import Worker

log = logging.getLogger("convexa.worker")

# SQLite has one writer at a time for the whole file: past a few processes they only queue on its
# lock (each process's own threads already queue inside it, convexa/db/sqlite3).
SQLITE_MAX_PROCESSES = 4
RESTART_DELAY_S = 2.0


def default_processes() -> int:
    """PostgreSQL: one process per CPU, so one host uses every core (threads share one GIL).
    SQLite: one (one writer at a time)."""
    if connection.vendor != "postgresql":
        return 1
    return max(1, os.cpu_count() or 1)


class Command(BaseCommand):
    help = ("Work every run's queued items until SIGTERM/SIGINT (which finish what is in flight, then exit 0). "
            "With --processes N, N worker processes share the host's cores and the fleet-wide guards.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--concurrency", type=int, default=None,
                            help="threads in all (default SKIP_TRACE_CONCURRENCY), split across the processes")
        parser.add_argument("--processes", type=int, default=None,
                            help="worker processes on this host (default: the number of CPUs on PostgreSQL, 1 on SQLite)")
        parser.add_argument("--exit-when-idle", action="store_true", help="stop when no run has work left")

    def handle(self, *args, **options) -> None:
        concurrency = options["concurrency"]
        if concurrency is not None and concurrency < 1:
            raise CommandError("--concurrency must be at least 1")
        processes = options["processes"]
        if processes is not None and processes < 1:
            raise CommandError("--processes must be at least 1")
        processes = processes or default_processes()
        if connection.vendor != "postgresql" and processes > SQLITE_MAX_PROCESSES:
            raise CommandError(
                f"--processes {processes} is more than SQLite can use: it has one writer at a time, so more than "
                f"{SQLITE_MAX_PROCESSES} processes only queue on its lock. Use PostgreSQL (DATABASE_URL) to scale out."
            )
        threads = concurrency or settings.SKIP_TRACE_CONCURRENCY
        if processes == 1:
            self._run_one(threads, options["exit_when_idle"])
        else:
            self._supervise(processes, math.ceil(threads / processes), options["exit_when_idle"])

    def _run_one(self, threads: int, exit_when_idle: bool) -> None:
        worker = Worker(concurrency=threads)

        def stop(signum, frame):  # noqa: ARG001 - signal handler signature
            worker.shutdown = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        worker.run(exit_when_idle=exit_when_idle)

    def _supervise(self, processes: int, threads: int, exit_when_idle: bool) -> None:
        """Start ``processes`` single-process workers and keep them running: a signal is passed on
        to each (they finish what is in flight); one that dies unasked is started again; with
        --exit-when-idle, this returns when all have finished. Holds no database connection."""
        connection.close()
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_skiptrace_worker",
                "--processes", "1", "--concurrency", str(threads)]
        if exit_when_idle:
            argv.append("--exit-when-idle")
        stopping = False

        def start() -> subprocess.Popen:
            # A child dies with its supervisor (Linux): a SIGKILLed supervisor leaves no worker behind.
            return subprocess.Popen(argv, cwd=settings.BASE_DIR, preexec_fn=_die_with_parent)  # noqa: S603, PLW1509

        children = [start() for _ in range(processes)]
        log.info("worker supervisor: %d processes x %d threads (pids %s)", processes, threads,
                 ",".join(str(c.pid) for c in children))

        def stop(signum, frame):  # noqa: ARG001
            nonlocal stopping
            stopping = True
            for child in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        codes: list[int] = []
        while children:
            time.sleep(0.2)
            for child in list(children):
                code = child.poll()
                if code is None:
                    continue
                children.remove(child)
                if stopping or (exit_when_idle and code == 0):
                    codes.append(code)
                    continue
                log.error("worker process %d exited with %s; starting another in %.0f s", child.pid, code,
                          RESTART_DELAY_S)
                time.sleep(RESTART_DELAY_S)
                if not stopping:
                    children.append(start())
        if any(codes):
            raise CommandError(f"worker processes exited with {sorted(set(codes))}", returncode=max(codes))


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's signal handler still stops them
        pass
