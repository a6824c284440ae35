"""The queue worker (after healthchecks' sendalerts and procrastinate's worker).

``Worker.process_one_batch()`` is the unit the tests call: claim up to SKIP_TRACE_BATCH_SIZE
items, run them through the money path, return True if it did work. ``run()`` keeps
``concurrency`` threads doing that until shut down; the signal handler only sets ``shutdown``, and
the threads finish the batch they hold (its request, its recording) before returning. Idle threads
wait on a condition that the main thread signals as soon as work is queued (``skiptrace.wakeup``),
with ``idle_sleep_s`` as the fallback poll.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable

from django.conf import settings
from django.db import OperationalError, close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from integrations.webhooks import WebhookThread
from skiptrace import guards, money
from skiptrace.dbconn import release_connection
from skiptrace.models import ItemStatus, RunItem
from skiptrace.provider import BatchDataClient
from skiptrace.states import claimable_q
from skiptrace.wakeup import WorkSignal

log = logging.getLogger("convexa.worker")

HOUSEKEEPING_EVERY_S = 30.0


class Worker:
    def __init__(
        self,
        *,
        concurrency: int | None = None,
        batch_size: int | None = None,
        client: BatchDataClient | None = None,
        clock: Callable = timezone.now,
        run_id: str | None = None,
        idle_sleep_s: float = 0.5,
    ) -> None:
        self.concurrency = concurrency or settings.SKIP_TRACE_CONCURRENCY
        self.batch_size = batch_size or settings.SKIP_TRACE_BATCH_SIZE
        self.client = client or BatchDataClient.from_settings()
        self.clock = clock
        self.run_id = run_id
        self.idle_sleep_s = idle_sleep_s
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.shutdown = False
        self._housekeeping_at = 0.0
        self._housekeeping_lock = threading.Lock()
        self._wake = threading.Condition()
        self._wake_generation = 0

    # -- single steps (what tests call) --

    def housekeeping(self, *, force: bool = False) -> None:
        """Reap expired leases, recount big runs whose counters went stale, and let budget-paused runs
        go on when a new day has room."""
        with self._housekeeping_lock:
            if not force and time.monotonic() - self._housekeeping_at < HOUSEKEEPING_EVERY_S:
                return
            self._housekeeping_at = time.monotonic()
        now = self.clock()
        money.leases_reap(now=now)
        money.runs_refresh_stale(now=now)
        guards.budget_unpause(now)
        if self.run_id is None:  # the fleet's workers, not a CLI --wait on one run (it exits when idle)
            from skiptrace import uploads

            try:
                uploads.upload_jobs_kick()  # real time on purpose (upload leases are wall-clock)
            except Exception:
                log.exception("taking over abandoned upload jobs failed")

    def process_one_batch(self) -> bool:
        """Claim and process one batch. True = did work; False = nothing was claimable."""
        self.housekeeping()
        items = money.items_claim(limit=self.batch_size, now=self.clock(), worker_id=self.worker_id, run_id=self.run_id)
        if not items:
            return False
        money.batch_process(items, client=self.client, clock=self.clock, worker_id=self.worker_id)
        return True

    def has_pending_work(self) -> bool:
        """Items queued in runs that may proceed, or in flight anywhere (for --exit-when-idle)."""
        pending = RunItem.objects.filter(
            Q(status=ItemStatus.IN_FLIGHT)
            | Q(status=ItemStatus.QUEUED) & claimable_q("run__")
        )
        if self.run_id is not None:
            pending = pending.filter(run_id=self.run_id)
        return pending.exists()

    # -- the loop --

    def run(self, *, exit_when_idle: bool = False) -> None:
        log.info("worker %s starting: %d threads, batch %d, provider %s (%s)", self.worker_id, self.concurrency,
                 self.batch_size, self.client.url, self.client.masked_auth)
        # A thread holding a rate permit must get its request out within the window's 50 ms margin.
        # Its ~6 database round trips each wait for the GIL while sibling threads parse answers;
        # at Python's default 5 ms switch interval that added up to 20-70 ms of permit lag on a
        # busy host (docs/PERFORMANCE.md). 1 ms bounds it at a small cost in CPU-bound throughput.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self.housekeeping(force=True)
        threads = [
            threading.Thread(target=self._loop, args=(exit_when_idle,), name=f"skiptrace-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for thread in threads:
            thread.start()
        # Webhooks on a thread of their own: finding run transitions and sending deliveries never
        # holds up a batch.
        webhooks = WebhookThread(clock=self.clock).start()
        signal = WorkSignal()
        try:
            while any(t.is_alive() for t in threads):
                if self.shutdown:
                    self._wake_all()
                    for thread in threads:
                        thread.join(timeout=0.2)
                elif signal.wait(timeout=0.2):
                    self._wake_all()
        finally:
            self.shutdown = True
            self._wake_all()
            for thread in threads:
                thread.join()
            signal.close()
            webhooks.stop()
            webhooks.flush()  # the events of what this worker just finished leave before it exits
        log.info("worker %s stopped", self.worker_id)

    def _wake_all(self) -> None:
        with self._wake:
            self._wake_generation += 1
            self._wake.notify_all()

    def _loop(self, exit_when_idle: bool) -> None:
        try:
            while not self.shutdown:
                close_old_connections()  # a fresh connection per unit of work survives DB restarts
                seen = self._wake_generation  # a signal from now on ends the idle wait below
                try:
                    did_work = self.process_one_batch()
                except OperationalError as exc:  # a busy database (no pooled connection in time): back off
                    log.warning("database busy (%s); this thread retries in 0.5 s", str(exc).splitlines()[0][:120])
                    did_work = False
                    release_connection()
                    time.sleep(0.5)
                except Exception:  # one bad batch must not kill the worker; its leases expire and it is retried
                    log.exception("batch failed; its items return to the queue when their lease expires")
                    did_work = False
                    release_connection()
                    time.sleep(1.0)
                if did_work:
                    continue
                if exit_when_idle and not self.has_pending_work():
                    return
                release_connection()  # an idle thread holds no pooled connection
                with self._wake:
                    self._wake.wait_for(lambda seen=seen: self._wake_generation != seen or self.shutdown,
                                        timeout=self.idle_sleep_s)
        finally:
            connection.close()
