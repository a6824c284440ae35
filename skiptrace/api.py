"""JSON API plumbing (after healthchecks' hc/api/decorators.py): one error() helper, one @api_auth.

Every ``/api/*`` answer is JSON; errors are ``{"error": Code, "detail": "...", **fields}``.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

View = Callable[..., HttpResponse]


def error(code: str, status: int, detail: str = "", **fields: Any) -> JsonResponse:
    body: dict[str, Any] = {"error": code, "detail": detail or code}
    body.update(fields)
    response = JsonResponse(body, status=status)
    if "retry_after" in fields and fields["retry_after"] is not None:
        response["Retry-After"] = str(max(0, int(fields["retry_after"])))
    return response


def token_ok(header: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <ADMIN_TOKEN>``; no token configured = closed."""
    expected = settings.ADMIN_TOKEN
    if not expected or not header:
        return False
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


class BadJson(ValueError):
    pass


def api_auth(
    methods: tuple[str, ...] = ("GET",), *, json_body: bool = False, scope: str | None = None
) -> Callable[[View], View]:
    """Checks the method, the bearer credential and its scope, and parses a JSON body into
    ``request.json`` once. The scope needed is ``read`` for GET and ``write`` otherwise, unless
    given; ``request.principal`` is who asked (``integrations.keys.Principal``)."""
    from integrations.keys import authenticate

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error("MethodNotAllowed", 405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            principal = authenticate(request.headers.get("Authorization"))
            if principal is None:
                if not settings.ADMIN_TOKEN and not _any_api_key():
                    return error("Unauthorized", 401, "the API is closed: ADMIN_TOKEN is not set on the server")
                return error("Unauthorized", 401, "missing, wrong or revoked bearer token")
            needed = scope or ("read" if request.method in ("GET", "HEAD") else "write")
            if not principal.allows(needed):
                return error("Forbidden", 403, f"this key's scope is {principal.scope}; {needed} is needed",
                             scope=principal.scope, required_scope=needed)
            request.principal = principal  # type: ignore[attr-defined]
            if json_body:
                try:
                    request.json = parse_json_body(request)  # type: ignore[attr-defined]
                except BadJson as exc:
                    return error("ValidationError", 400, str(exc), fields={"body": str(exc)})
            return view(request, *args, **kwargs)

        wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # bearer-token API, no cookies
        return wrapper

    return decorator


def _any_api_key() -> bool:
    from integrations.models import ApiKey

    return ApiKey.objects.filter(revoked_at__isnull=True).exists()


def require_scope(request: HttpRequest, needed: str) -> JsonResponse | None:
    """Inside a view: a 403 when the caller's scope is below ``needed`` (e.g. a budget override)."""
    principal = getattr(request, "principal", None)
    if principal is None or not principal.allows(needed):
        have = principal.scope if principal is not None else "none"
        return error("Forbidden", 403, f"this key's scope is {have}; {needed} is needed",
                     scope=have, required_scope=needed)
    return None


def _content_length(request: HttpRequest) -> int:
    raw = (request.META.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        return 0
    if not (raw.isascii() and raw.isdigit()):
        raise BadJson(f"Content-Length {raw[:40]!r} is not a byte count")
    return int(raw)


def parse_json_body(request: HttpRequest) -> Any:
    length = _content_length(request)
    if length > settings.MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {settings.MAX_REQUEST_BYTES}")
    raw = request.body
    if not raw:
        raise BadJson("body must be a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJson(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadJson("body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int limit)
        raise BadJson(f"body is not usable JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise BadJson("body must be a JSON object")
    return data


class PayloadTooLarge(Exception):
    pass
