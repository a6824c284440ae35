"""``Idempotency-Key`` on POSTs that create work (runs, single-lead calls).

The same key and body within 24 h answers what the first request answered (the same ``run_id``),
concurrently too: the first request claims the key (a unique row) before it does anything, and a
repeat that arrives while it works waits for its answer. The same key with another body is a 409.
Only a 2xx is kept: a refused request (400, 403, 429 …), a 5xx or a crash releases the key, so a
client's corrected or later retry does the work. The body and the query string make "the same request".
Keys are per principal (an API key, or the admin token), so two integrations cannot collide.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import time
from collections.abc import Callable

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from integrations.models import IdempotencyRecord
from skiptrace.dbconn import release_connection

HEADER = "Idempotency-Key"
TTL = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255
WAIT_FOR_FIRST_S = 30.0
_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # MAX_KEY_LENGTH visible ASCII characters


class KeyProblem(ValueError):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _replay(record: IdempotencyRecord) -> HttpResponse:
    response = HttpResponse(record.response_body, status=record.status_code, content_type="application/json")
    response["Idempotent-Replayed"] = "true"
    return response


def idempotent(request: HttpRequest, *, principal: str, route: str,
               handle: Callable[[], HttpResponse], now: dt.datetime | None = None,
               sleep: Callable[[float], None] = time.sleep) -> HttpResponse:
    """Run ``handle`` once per (principal, route, key); replay its answer to repeats."""
    key = request.headers.get(HEADER)
    if key is None:
        return handle()
    key = key.strip()
    if not _KEY_RE.fullmatch(key):
        raise KeyProblem(400, "ValidationError",
                         f"{HEADER} must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (no spaces)")
    now = now or timezone.now()
    body_hash = hashlib.sha256(request.get_full_path().encode() + b"\n" + (request.body or b"")).hexdigest()
    IdempotencyRecord.objects.filter(principal=principal, route=route, key=key, created_at__lt=now - TTL).delete()
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(principal=principal, route=route, key=key,
                                                      body_hash=body_hash, created_at=now)
    except IntegrityError:
        return _repeat(principal, route, key, body_hash, sleep=sleep)
    try:
        response = handle()
    except BaseException:
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        raise
    if not 200 <= response.status_code < 300 or getattr(response, "streaming", False):
        # Only work that was done is kept: a refused request (400, 403, 429 …) or a 5xx releases the
        # key, so the client can fix or retry it under the same key.
        IdempotencyRecord.objects.filter(pk=record.pk).delete()
        return response
    IdempotencyRecord.objects.filter(pk=record.pk).update(status_code=response.status_code,
                                                          response_body=response.content.decode("utf-8"))
    return response


def _repeat(principal: str, route: str, key: str, body_hash: str, *, sleep: Callable[[float], None]) -> HttpResponse:
    deadline = time.monotonic() + WAIT_FOR_FIRST_S
    while True:
        record = IdempotencyRecord.objects.filter(principal=principal, route=route, key=key).first()
        if record is None:
            raise KeyProblem(409, "IdempotencyConflict",
                             f"the first request with this {HEADER} failed meanwhile; send it again")
        if record.body_hash != body_hash:
            raise KeyProblem(409, "IdempotencyConflict",
                             f"this {HEADER} was used with another body in the last 24 h")
        if record.status_code is not None:
            return _replay(record)
        if time.monotonic() >= deadline:
            raise KeyProblem(409, "IdempotencyConflict",
                             f"the first request with this {HEADER} is still at work; retry later")
        release_connection()  # a waiting repeat holds no pooled connection (the first needs one to finish)
        sleep(0.05)
