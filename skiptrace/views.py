"""The skip-trace JSON API. Views stay thin: they validate, call a service, serialize."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse

from skiptrace import guards


def health(request: HttpRequest) -> JsonResponse:
    """Open to everyone (load balancers): ``{ok, db, provider}``; 503 when the database is down."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        db_ok = True
    except Exception:
        db_ok = False
    provider = guards.provider_status() if db_ok else "unknown"
    return JsonResponse({"ok": db_ok, "db": db_ok, "provider": provider}, status=200 if db_ok else 503)
