"""Keeps every /api/ answer JSON, whatever went wrong: no HTML page, no traceback, no bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse

from skiptrace.api import PayloadTooLarge, error

log = logging.getLogger("convexa.api")
security_log = logging.getLogger("django.security.api")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/api/") and response.status_code >= 400 and not _is_json(response):
            # Another layer's page (Django's CSRF 403, a DisallowedHost 400, a 500 raised by a
            # middleware before the view): the API answers JSON only. First in MIDDLEWARE, so it
            # sees what every other middleware answered.
            code, detail = _PAGE_CODES.get(response.status_code, ("Error", "request failed"))
            if response.status_code == 404:
                detail = f"no such route: {request.path}"
            replacement = error(code, response.status_code, detail)
            for header in ("Allow", "Retry-After"):
                if response.has_header(header):
                    replacement[header] = response[header]
            return replacement
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if database_unavailable(exception):
            return unavailable(request, exception)
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, PayloadTooLarge | RequestDataTooBig):
            return error("PayloadTooLarge", 413, str(exception) or "request body too large")
        if isinstance(exception, SuspiciousOperation):  # e.g. TooManyFieldsSent: Django answers 400 too
            security_log.warning("%s on %s %s", type(exception).__name__, request.method, request.path)
            return error("BadRequest", 400, "bad request")
        if isinstance(exception, Http404):
            return error("NotFound", 404, "not found")
        if isinstance(exception, PermissionDenied):
            return error("Forbidden", 403, "forbidden")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error("InternalError", 500, "unexpected server error; it has been logged")


_PAGE_CODES = {
    400: ("BadRequest", "bad request"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "not found"),
    405: ("MethodNotAllowed", "method not allowed"),
    413: ("PayloadTooLarge", "request body too large"),
    500: ("InternalError", "unexpected server error; it has been logged"),
}


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


# --- the database refused or is busy: 503 with Retry-After, never a 500 --------------------------------

DATABASE_RETRY_AFTER_S = 5


def database_unavailable(exc: BaseException | None) -> bool:
    """A database that refuses connections, has none left (PostgreSQL "too many clients", the pool's
    wait ran out) or is locked (SQLite) is unavailable for now: the request may be retried."""
    from django.db import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


def unavailable(request: HttpRequest, exc: BaseException) -> HttpResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.path,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
    if request.path.startswith("/api/"):
        return error("DatabaseUnavailable", 503, "the database is busy or unreachable; retry after the "
                     "Retry-After seconds", retry_after=DATABASE_RETRY_AFTER_S)
    response = HttpResponse(
        "<!doctype html><title>Busy</title><h1>The database is busy or unreachable</h1>"
        f"<p>Nothing was lost. Try again in {DATABASE_RETRY_AFTER_S} seconds.</p>",
        status=503, content_type="text/html; charset=utf-8",
    )
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: what a middleware raised (a session read, a login check) lands here. A database
    error is a 503 with Retry-After; anything else the plain 500 (JSON under /api/, see above)."""
    import sys

    from django.views.defaults import server_error as django_server_error

    exc = sys.exc_info()[1]
    if database_unavailable(exc):
        return unavailable(request, exc)
    if request.path.startswith("/api/"):
        return error("InternalError", 500, "unexpected server error; it has been logged")
    return django_server_error(request)
