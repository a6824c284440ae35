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
from skiptrace import bulk, guards, money
from skiptrace.dbconn import release_connection
from skiptrace.models import ItemStatus, RunItem
from skiptrace.provider import BatchDataClient
from skiptrace.states import claimable_q
from skiptrace.wakeup import WorkSignal

log = logging.getLogger("convexa.worker")

HOUSEKEEPING_EVERY_S = 30.0
CACHED_CLAIM_MAX = 1_000  # items a claim may grow to while the caches answer it
CACHED_CLAIM_RATIO = 0.9  # ... when at least this share of the last claim was cached
FOLLOWER_WAIT_S = 5.0  # an idle thread that is not its process's poller waits this long at most


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
        self._wake_tokens = 0  # single wake-ups (one more thread to claim), taken one by one
        self._idle_threads = 0  # threads in _idle_wait (under _wake)
        self._poller = threading.Lock()  # held by the one idle thread of this process that polls
        self._claim_size = self.batch_size
        self.sweep_window = money.SWEEP_WINDOW  # items a cached claim looks at (``money.cached_claim``)
        self._after_idle: dict[int, int] = {}  # thread ident -> _probe_gen when it went idle
        self._probe_lock = threading.Lock()
        self._probe_gen = 0  # cached claims made first after an idle wait (one per wake-up)
        self._idle_exit = False  # --exit-when-idle: a thread found nothing pending; all threads end

    # -- single steps (what tests call) --

    def housekeeping(self, *, force: bool = False) -> None:
        """Reap expired leases, recount big runs whose counters went stale, fold the budget's delta
        rows, vacuum the in-flight rows and refresh stale planner statistics (PostgreSQL), and let
        budget-paused runs go on when a new day has room."""
        with self._housekeeping_lock:
            if not force and time.monotonic() - self._housekeeping_at < HOUSEKEEPING_EVERY_S:
                return
            self._housekeeping_at = time.monotonic()
        now = self.clock()
        money.leases_reap(now=now)
        money.runs_refresh_stale(now=now)
        guards.budget.budget_deltas_fold()
        guards.slots_vacuum()
        bulk.statistics_refresh()
        guards.budget_unpause(now)
        if self.run_id is None:  # the fleet's workers, not a CLI --wait on one run (it exits when idle)
            from skiptrace import uploads

            try:
                uploads.upload_jobs_kick()  # real time on purpose (upload leases are wall-clock)
            except Exception:
                log.exception("taking over abandoned upload jobs failed")

    def process_one_batch(self) -> bool:
        """Claim and process one batch. True = did work; False = nothing was claimable."""
        return self._one_batch() > 0

    def _one_batch(self) -> int:
        """Claim and process one batch; returns how many items were claimed.

        While claims are (nearly) all answered by the caches, the claim grows up to
        ``CACHED_CLAIM_MAX`` items: a cached item costs ~0.1 ms, a claim, its recount and its
        commits a few ms, so at batch 100 the fixed costs were most of a cached re-run. At most one
        provider batch of a claim goes to the provider; the rest goes back to the queue, and the next
        claim is one batch again.

        Cached claims (``money.cached_claim``) serve what the L2 cache surely answers in bulk
        statements and claim the rest for ``batch_process``: a thread's first claim after it was
        idle is one (of one batch: new work may be a re-upload, and 64 threads that each took 100
        items of one the full way were a third of a 20,000-lead re-run), and once the caches
        answered a claim, the next ones are windows of ``sweep_window`` items. The first claim
        the caches did not answer ends it."""
        self.housekeeping()
        idled_at = self._after_idle.pop(threading.get_ident(), None)
        if idled_at is not None:
            swept = None
            with self._probe_lock:  # the first of the threads woken together looks; the others wait ms for its verdict
                if self._probe_gen == idled_at:
                    self._probe_gen += 1
                    swept = self._cached_claim(self.batch_size)
            if swept is not None:
                return self._cached_batch(swept)
        if self._claim_size >= CACHED_CLAIM_MAX:
            return self._cached_batch(self._cached_claim(self.sweep_window))
        limit = max(self.batch_size, self._claim_size)
        items = money.items_claim(limit=limit, now=self.clock(), worker_id=self.worker_id, run_id=self.run_id)
        if not items:
            return 0
        outcome = money.batch_process(items, client=self.client, clock=self.clock, worker_id=self.worker_id,
                                      provider_batch=self.batch_size)
        if outcome.cached == len(items) == limit:  # a full claim, all cached: a re-upload
            self._claim_size = CACHED_CLAIM_MAX
        elif outcome.cached >= CACHED_CLAIM_RATIO * len(items):
            self._claim_size = min(CACHED_CLAIM_MAX, max(self.batch_size, self._claim_size) * 2)
        else:
            self._claim_size = self.batch_size
        return len(items)

    def _cached_claim(self, limit: int) -> money.Swept:
        """A cached claim; its verdict (did the cache answer it?) sets the next claims' kind at once."""
        swept = money.cached_claim(limit=limit, now=self.clock(), worker_id=self.worker_id, run_id=self.run_id)
        if swept.window and swept.served >= CACHED_CLAIM_RATIO * swept.window:
            self._claim_size = CACHED_CLAIM_MAX
        elif swept.window:
            self._claim_size = self.batch_size  # batch_process may still find it cached (below)
        return swept

    def _cached_batch(self, swept: money.Swept) -> int:
        cached = swept.served
        if swept.items:
            outcome = money.batch_process(swept.items, client=self.client, clock=self.clock,
                                          worker_id=self.worker_id, provider_batch=self.batch_size)
            cached += outcome.cached
        if swept.run_ids - {i.run_id for i in swept.items}:  # batch_process recounted the others
            money.runs_refresh(swept.run_ids - {i.run_id for i in swept.items}, now=self.clock())
        if swept.window:  # an empty window changes nothing (the queue's rest is in other threads' windows)
            self._claim_size = CACHED_CLAIM_MAX if cached >= CACHED_CLAIM_RATIO * swept.window else self.batch_size
        return swept.window

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
            # the pooled connection of the thread that ran the worker goes back (a worker run on a
            # thread of a longer-lived process, as `skiptrace_run` and the tests do, would keep it)
            release_connection()
        log.info("worker %s stopped", self.worker_id)

    def _wake_all(self) -> None:
        with self._wake:
            self._wake_generation += 1
            self._wake.notify_all()

    def _wake_one(self) -> None:
        with self._wake:
            if self._idle_threads > self._wake_tokens:  # a token nobody waits for would spin a later idle thread
                self._wake_tokens += 1
                self._wake.notify()

    def _loop(self, exit_when_idle: bool) -> None:
        """Claim and process batches until shut down. Idle threads wait: one of them per process
        (the holder of ``_poller``) polls every ``idle_sleep_s``; the others wait for a wake-up (a
        NOTIFY or data change seen by the main thread wakes all; a thread whose claim came back full
        wakes one more). 64 threads that each polled every 0.5 s made 128 claims a second on an idle
        worker, and slowed a 20,000-row intake on the same database from 2.7 s to 12.6 s."""
        try:
            while not self.shutdown and not self._idle_exit:
                close_old_connections()  # a fresh connection per unit of work survives DB restarts
                seen = self._wake_generation  # a signal from now on ends the idle wait below
                try:
                    claimed = self._one_batch()
                except OperationalError as exc:  # a busy database (no pooled connection in time): back off
                    log.warning("database busy (%s); this thread retries in 0.5 s", str(exc).splitlines()[0][:120])
                    claimed = 0
                    release_connection()
                    time.sleep(0.5)
                except Exception:  # one bad batch must not kill the worker; its leases expire and it is retried
                    log.exception("batch failed; its items return to the queue when their lease expires")
                    claimed = 0
                    release_connection()
                    time.sleep(1.0)
                if claimed:
                    if claimed >= self.batch_size:  # there may be more: one more thread claims
                        self._wake_one()
                    continue
                if exit_when_idle and not self.has_pending_work():
                    self._idle_exit = True
                    self._wake_all()
                    return
                release_connection()  # an idle thread holds no pooled connection
                self._idle_wait(seen)
        finally:
            connection.close()

    def _idle_wait(self, seen: int) -> None:
        self._after_idle[threading.get_ident()] = self._probe_gen
        self._claim_size = self.batch_size  # nothing to claim: whatever comes next, its first claim finds out
        poller = self._poller.acquire(blocking=False)
        try:
            with self._wake:
                self._idle_threads += 1
                try:
                    self._wake.wait_for(
                        lambda: (self._wake_generation != seen or self._wake_tokens > 0 or self.shutdown
                                 or self._idle_exit),
                        timeout=self.idle_sleep_s if poller else FOLLOWER_WAIT_S,
                    )
                finally:
                    self._idle_threads -= 1
                if self._wake_tokens > 0:
                    self._wake_tokens -= 1
        finally:
            if poller:
                self._poller.release()
