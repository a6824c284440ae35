"""Keeps every /api/ answer JSON, whatever went wrong: no HTML page, no traceback, no bare 500."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from skiptrace.api import PayloadTooLarge, error

log = logging.getLogger("convexa.api")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if request.path.startswith("/api/") and not _is_json(response):
            if response.status_code == 404:
                return error("NotFound", 404, f"no such route: {request.path}")
            if response.status_code == 403:  # e.g. Django's CSRF page: the API answers JSON only
                return error("Forbidden", 403, "forbidden")
            if response.status_code == 400:  # e.g. DisallowedHost, a bad multipart body
                return error("BadRequest", 400, "bad request")
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith("/api/"):
            return None
        if isinstance(exception, PayloadTooLarge | RequestDataTooBig):
            return error("PayloadTooLarge", 413, str(exception) or "request body too large")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error("InternalError", 500, "unexpected server error; it has been logged")


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
