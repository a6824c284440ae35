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
