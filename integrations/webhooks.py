"""Signed webhooks: ``run.finished``, ``run.paused`` (with its reason) and ``budget.reached``.

Events are found, not pushed: the worker's webhook thread compares each live run's state with the
last state announced for it (``RunEventState``), so every transition is announced once, whichever
process or path caused it, and a crash loses nothing (the comparison is made again). Each event
becomes one ``WebhookDelivery`` row per endpoint; the same thread sends due deliveries and retries
a non-2xx or no answer with exponential backoff (10 s, 20 s, 40 s … at most an hour apart) for
``WEBHOOK_RETRY_HOURS`` (24). Nothing here runs inside a batch: sending never blocks the money path.

Body: ``{"event", "id", "created_at", "data": <run status>}``. Headers: ``X-Convexa-Timestamp: <unix
seconds>`` and ``X-Convexa-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the
secret>``; a receiver recomputes it and refuses timestamps older than a few minutes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable

import requests
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connections, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.models import DeliveryState, RunEventState, WebhookAttempt, WebhookDelivery, WebhookEndpoint

log = logging.getLogger("convexa.webhooks")

EVENTS = ("run.finished", "run.paused", "budget.reached")
ENV_ENDPOINT = "env"
SEND_TIMEOUT_S = (5.0, 10.0)
LEASE = dt.timedelta(seconds=60)
FIRST_RETRY_S = 10.0
MAX_RETRY_GAP_S = 3600.0


def sign(secret: str, timestamp: int, body: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{body}".encode(), hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempts: int) -> float:
    """Wait after the ``attempts``-th failure: 10 s, 20 s, 40 s … capped at an hour, ±10 % jitter."""
    base = min(MAX_RETRY_GAP_S, FIRST_RETRY_S * 2 ** max(0, attempts - 1))
    return base * (0.9 + 0.2 * random.random())


def sync_env_endpoint() -> None:
    """``WEBHOOK_URL``/``WEBHOOK_SECRET`` as the endpoint named ``env`` (inactive when unset)."""
    url, secret = settings.WEBHOOK_URL, settings.WEBHOOK_SECRET
    if url:
        WebhookEndpoint.objects.update_or_create(name=ENV_ENDPOINT, defaults={"url": url, "secret": secret or "",
                                                                              "active": True})
    else:
        WebhookEndpoint.objects.filter(name=ENV_ENDPOINT, active=True).update(active=False)


def enqueue(event: str, data: dict, *, now: dt.datetime) -> int:
    """One delivery per active endpoint that wants ``event``; returns how many."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    endpoints = [e for e in WebhookEndpoint.objects.filter(active=True) if e.wants(event)]
    if not endpoints:
        return 0
    event_id = "evt_" + uuid.uuid4().hex
    body = json.dumps({"event": event, "id": event_id, "created_at": now.isoformat().replace("+00:00", "Z"),
                       "data": data}, sort_keys=True, separators=(",", ":"), default=str)
    WebhookDelivery.objects.bulk_create([
        WebhookDelivery(event_id=event_id, event=event, endpoint=e, body=body, next_attempt_at=now, created_at=now)
        for e in endpoints
    ])
    log.info("webhook %s %s queued for %d endpoints", event, event_id, len(endpoints))
    return len(endpoints)


def scan_runs(*, now: dt.datetime) -> int:
    """Announce each run's transitions since the last scan; returns how many events were queued."""
    from skiptrace.guards import budget_day
    from skiptrace.models import Run
    from skiptrace.runs import run_status

    if not WebhookEndpoint.objects.filter(active=True).exists():
        return 0
    recent = now - dt.timedelta(days=1)
    runs = list(Run.objects.filter(Q(finished_at__isnull=True) | Q(finished_at__gte=recent)))
    known = {s.run_id: s for s in RunEventState.objects.filter(run_id__in=[r.run_id for r in runs])}
    queued = 0
    for run in runs:
        state, reason = run.state, run.shown_reason or ""
        seen = known.get(run.run_id)
        if seen is not None and (seen.state, seen.reason) == (state, reason):
            continue
        with transaction.atomic():
            # Claim the transition first (one scanner wins it fleet-wide), then queue its events.
            if seen is None:
                _, created = RunEventState.objects.get_or_create(
                    run_id=run.run_id, defaults={"state": state, "reason": reason, "updated_at": now})
                if not created:
                    continue
            elif not RunEventState.objects.filter(run_id=run.run_id, state=seen.state, reason=seen.reason).update(
                    state=state, reason=reason, updated_at=now):
                continue
            if state == "finished":
                queued += enqueue("run.finished", run_status(run), now=now)
            elif state == "paused" and (seen is None or seen.state != "paused" or seen.reason != reason):
                queued += enqueue("run.paused", run_status(run), now=now)
                if reason == "daily_budget":
                    queued += _budget_reached(run, budget_day(now), now=now)
    return queued


def _budget_reached(run, day: dt.date, *, now: dt.datetime) -> int:
    """``budget.reached`` once per budget day, with the run that met it."""
    from skiptrace.runs import run_status

    _, created = RunEventState.objects.get_or_create(run_id=f"budget.reached:{day.isoformat()}",
                                                     defaults={"state": "sent", "updated_at": now})
    return enqueue("budget.reached", {**run_status(run), "budget_day": day.isoformat()}, now=now) if created else 0


def deliver_due(*, now: dt.datetime, session: requests.Session | None = None, limit: int = 20) -> int:
    """Send up to ``limit`` due deliveries (each claimed with a lease first); returns how many were tried."""
    due = list(WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=now)
               .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
               .order_by("next_attempt_at", "id").values_list("id", flat=True)[:limit])
    session = session or requests.Session()
    tried = 0
    for delivery_id in due:
        claimed = WebhookDelivery.objects.filter(id=delivery_id, state=DeliveryState.PENDING).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)).update(lease_until=now + LEASE)
        if not claimed:
            continue  # another sender took it
        delivery = WebhookDelivery.objects.select_related("endpoint").get(id=delivery_id)
        _send(delivery, session=session, now=now)
        tried += 1
    return tried


def _send(delivery: WebhookDelivery, *, session: requests.Session, now: dt.datetime) -> None:
    endpoint = delivery.endpoint
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Convexa-Webhooks/1",
        "X-Convexa-Event": delivery.event,
        "X-Convexa-Delivery": str(delivery.pk),
        "X-Convexa-Timestamp": str(timestamp),
        "X-Convexa-Signature": sign(endpoint.secret, timestamp, delivery.body),
    }
    started = time.monotonic()
    status, error = None, ""
    try:
        response = session.post(endpoint.url, data=delivery.body.encode("utf-8"), headers=headers,
                                timeout=SEND_TIMEOUT_S, allow_redirects=False)
        status = response.status_code
    except requests.RequestException as exc:
        error = f"{exc.__class__.__name__}"[:200]
    duration_ms = int(1000 * (time.monotonic() - started))
    attempts = delivery.attempts + 1
    ok = status is not None and 200 <= status < 300
    update: dict = {"attempts": attempts, "last_status": status, "last_error": error, "lease_until": None}
    if ok:
        update.update(state=DeliveryState.DELIVERED, delivered_at=now)
    else:
        retry_at = now + dt.timedelta(seconds=backoff_s(attempts))
        give_up_at = delivery.created_at + dt.timedelta(hours=settings.WEBHOOK_RETRY_HOURS)
        if retry_at > give_up_at:
            update["state"] = DeliveryState.FAILED
        else:
            update["next_attempt_at"] = retry_at
    with transaction.atomic():
        WebhookAttempt.objects.create(delivery=delivery, at=now, status_code=status, error=error,
                                      duration_ms=duration_ms)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**update)
    log.info("webhook %s delivery %s to endpoint %s: %s (attempt %d)", delivery.event, delivery.pk, endpoint.name,
             status if status is not None else error, attempts)


class WebhookThread:
    """The worker's sender: every second, scan runs and send due deliveries. Never raises."""

    def __init__(self, *, clock: Callable[[], dt.datetime] = timezone.now, every_s: float = 1.0) -> None:
        self.clock = clock
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="skiptrace-webhooks", daemon=True)
        self._synced_at = 0.0

    def start(self) -> WebhookThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def step(self) -> None:
        if time.monotonic() - self._synced_at > 60:
            sync_env_endpoint()
            self._synced_at = time.monotonic()
        scan_runs(now=self.clock())
        deliver_due(now=self.clock())

    def flush(self) -> None:
        """One last scan and send, in the calling thread (a worker about to exit). Never raises."""
        try:
            close_old_connections()
            self.step()
        except Exception:
            log.warning("webhooks: the last send before exit failed; the next worker sends it", exc_info=True)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    close_old_connections()
                    self.step()
                except DatabaseError as exc:  # one line, as the worker's threads log it (no traceback)
                    log.warning("webhooks: database busy (%s); trying again", str(exc).splitlines()[0][:120] if str(exc) else
                                exc.__class__.__name__)
                    log.debug("webhooks: the database error", exc_info=True)
                except Exception:
                    log.exception("webhooks: unexpected error; trying again")
                self._stop.wait(self.every_s)
        finally:
            connections.close_all()  # this thread's own connection: no session left behind
