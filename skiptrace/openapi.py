"""The OpenAPI 3.1 document of every ``/api`` route, served at ``GET /api/openapi.json``.

Hand-written next to the views it describes, and kept true by ``tests/api/test_openapi.py``: every URL
pattern under ``/api/`` is in ``paths`` and every path is a URL pattern; every documented response
code of a route is produced by a test whose body is validated against the schema documented here;
and a schemathesis run against this document finds no 5xx and no undocumented answer.

The document holds no data (no token, no run, no lead), so it is open like ``/api/health``.
Schemas are JSON Schema 2020-12 (OpenAPI 3.1); objects allow extra keys, as the contract does.
"""

from __future__ import annotations

import copy
from typing import Any

from django.http import HttpRequest, JsonResponse

from skiptrace.api import error
from skiptrace.openapi_schemas import (  # noqa: F401 - SCHEMAS and the builders, re-exported
    _BOOL,
    _DATETIME,
    _INT0,
    _NUM0,
    _STR,
    API_VERSION,
    MAX_LEADS,
    OPENAPI_VERSION,
    SCHEMAS,
    _nullable,
    _ref,
)


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER_HEADER = {"Retry-After": {"description": "the body's retry_after, in seconds",
                                       "schema": {"type": "string", "pattern": "^[0-9]+$"}}}

RESPONSES: dict[str, Any] = {
    "Unauthorized": _json(_ref("Unauthorized"), "missing or wrong bearer token (or ADMIN_TOKEN unset on the server)"),
    "NotFound": _json(_ref("NotFound"), "no such run, lead or path"),
    "ValidationError": _json(_ref("ValidationError"), "the request is not well-formed; `fields` says why"),
    "PayloadTooLarge": _json(_ref("PayloadTooLarge"), f"more than {MAX_LEADS} leads or a body over 50 MB"),
    "BudgetPause": _json(_ref("BudgetPause"), "today's skip-trace budget is spent", _RETRY_AFTER_HEADER),
    "Forbidden": _json(_ref("Forbidden"), "the API key's scope does not allow this (read < write < admin)"),
    "IdempotencyConflict": _json(_ref("IdempotencyConflict"),
                                 "the Idempotency-Key was used with another body, or its first request is still at "
                                 "work past 30 s (retry), or failed meanwhile (send again)"),
}

_IDEMPOTENCY_PARAM = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x21-\\x7e]+$"},
    "description": "any unique string: the same key and body within 24 h answers what the first request "
                   "answered (the same run_id), concurrently too, with the header `Idempotent-Replayed: true`; "
                   "the same key with another body is 409",
}



def _r(name: str) -> dict[str, str]:
    return {"$ref": "#/components/responses/" + name}


def _run_id_param() -> dict[str, Any]:
    return {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1},
            "description": "a run id as returned by POST /api/skiptrace-runs"}


_OPEN: list = []  # "security: []": no token needed
_JSON_BODY = "application/json"

_EXAMPLE_LEAD = {"lead_id": "A-1", "first_name": "Denise", "last_name": "Alvarez", "street": "4410 Oak Hollow Dr",
                 "city": "Tampa", "state": "FL", "zip": "33610"}
_EXAMPLE_POLICY = {"force": False, "fallback": False, "retry_sanitized": True}


def _run_links() -> dict[str, Any]:
    """OpenAPI links: a created run's id feeds its other routes (schemathesis' stateful run follows them)."""
    run_id = {"run_id": "$response.body#/run_id"}
    return {name: {"operationId": op, "parameters": run_id}
            for name, op in (("status", "runStatus"), ("report", "runReport"), ("artifacts", "runArtifacts"),
                             ("resume", "runResume"), ("pause", "runPause"))}


PATHS: dict[str, Any] = {
    "/api/health": {"get": {
        "operationId": "health",
        "summary": "Liveness and readiness (open, for load balancers)",
        "security": _OPEN,
        "responses": {
            "200": _json(_ref("Health"), "the database answers"),
            "503": _json(_ref("Health"), "the database does not answer (`ok` and `db` false)"),
        },
    }},
    "/api/openapi.json": {"get": {
        "operationId": "openapi",
        "summary": "This document (open: it documents, it holds no data)",
        "security": _OPEN,
        "responses": {"200": _json(_ref("OpenApiDocument"), "the OpenAPI 3.1 document")},
    }},
    "/api/metrics": {"get": {
        "operationId": "metrics",
        "summary": "Counters and gauges of the whole service",
        "parameters": [{"name": "format", "in": "query", "required": False,
                        "schema": {"enum": ["json", "prometheus"]},
                        "description": "json (default) or prometheus text"}],
        "responses": {
            "200": {"description": "the metrics",
                    "content": {"application/json": {"schema": _ref("Metrics")},
                                "text/plain": {"schema": {"type": "string"}}}},
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
        },
    }},
    "/api/skiptrace-runs": {"get": {
        "operationId": "runList",
        "summary": "Runs, newest first, a page at a time (read scope)",
        "parameters": [
            {"name": "limit", "in": "query", "required": False,
             "schema": {"type": "string", "pattern": "^(?:[1-9][0-9]?|1[0-9]{2}|200)$"},
             "description": "1-200 runs a page (default 50)"},
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
             "description": "the `next` of the page before (opaque: any other value is a 400)"},
            {"name": "state", "in": "query", "required": False,
             "schema": {"enum": ["queued", "running", "paused", "finished"]}},
            {"name": "label", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 200},
             "description": "source_label, exactly"},
        ],
        "responses": {
            "200": _json(_ref("RunList"), "a page of runs"),
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
        },
    }, "post": {
        "operationId": "runCreate",
        "summary": "Create a run from JSON leads; workers take it from the queue (write scope)",
        "parameters": [_IDEMPOTENCY_PARAM,
                       {"name": "dry_run", "in": "query", "required": False, "schema": {"enum": ["0", "1"]},
                        "description": "1: answer a quote (rows, invalid, duplicates, cached, billable, worst case, "
                                       "budget left) and create nothing"}],
        "requestBody": {"required": True, "content": {_JSON_BODY: {
            "schema": _ref("RunCreateRequest"),
            "example": {"source_label": "September list", "leads": [_EXAMPLE_LEAD], "policy": _EXAMPLE_POLICY},
        }}},
        "responses": {
            "200": {**_json({"oneOf": [_ref("RunCreated"), _ref("RunQuote")]},
                            "the run is created (incomplete leads are failed items), or with dry_run=1 its quote"),
                    "links": _run_links()},
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
            "403": _r("Forbidden"),
            "409": _r("IdempotencyConflict"),
            "413": _r("PayloadTooLarge"),
            "429": _r("BudgetPause"),
        },
    }},
    "/api/skiptrace-runs/{run_id}/status": {"get": {
        "operationId": "runStatus",
        "summary": "Counters and state of a run",
        "parameters": [_run_id_param()],
        "responses": {"200": _json(_ref("RunStatus"), "the run's status"), "401": _r("Unauthorized"),
                      "404": _r("NotFound")},
    }},
    "/api/skiptrace-runs/{run_id}/resume": {"post": {
        "operationId": "runResume",
        "summary": "Requeue the run's failed (but not invalid_input) and queued items",
        "parameters": [
            _run_id_param(),
            {"name": "overrideBudget", "in": "query", "required": False, "schema": {"enum": ["0", "1"]},
             "description": "1: let this run go on past today's cap (admin scope)"},
        ],
        "responses": {
            "200": _json(_ref("ResumeResult"), "items requeued"),
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
            "403": _r("Forbidden"),
            "404": _r("NotFound"),
            "429": _r("BudgetPause"),
        },
    }},
    "/api/skiptrace-runs/{run_id}/pause": {"post": {
        "operationId": "runPause",
        "summary": "An operator's pause: in-flight requests finish, nothing new is claimed (write scope)",
        "parameters": [_run_id_param()],
        "responses": {
            "200": _json(_ref("RunStatus"), "the run's status, paused"),
            "401": _r("Unauthorized"),
            "403": _r("Forbidden"),
            "404": _r("NotFound"),
            "409": _json(_ref("IdempotencyConflict"), "the run is finished"),
        },
    }},
    "/api/skiptrace-runs/{run_id}/report": {"get": {
        "operationId": "runReport",
        "summary": "The run's report (the seed's schema), computed on demand",
        "parameters": [_run_id_param()],
        "responses": {"200": _json(_ref("Report"), "the report"), "401": _r("Unauthorized"),
                      "404": _r("NotFound")},
    }},
    "/api/skiptrace-runs/{run_id}/artifacts": {"get": {
        "operationId": "runArtifacts",
        "summary": "Signed, expiring links to report.json and enriched.csv",
        "parameters": [_run_id_param()],
        "responses": {
            "200": _json(_ref("ArtifactLinks"), "the links (no token needed to follow them)"),
            "401": _r("Unauthorized"),
            "404": _r("NotFound"),
            "409": _json(_ref("NotReady"), "the run has not finished; its files do not exist yet"),
        },
    }},
    "/api/artifacts/{run_id}/{name}": {"get": {
        "operationId": "artifactDownload",
        "summary": "Download a run's file through a signed link (the link's token is the permission)",
        "security": _OPEN,
        "parameters": [
            _run_id_param(),
            {"name": "name", "in": "path", "required": True, "schema": {"enum": ["report.json", "enriched.csv"]}},
            {"name": "token", "in": "query", "required": True, "schema": {"type": "string"},
             "description": "`<expires_at>.<signature>` from /artifacts"},
        ],
        "responses": {
            "200": {"description": "the file, as an attachment",
                    "content": {"application/json": {"schema": _ref("Report")},
                                "text/csv": {"schema": {"type": "string"}}}},
            "403": _json(_ref("Forbidden"), "the link is invalid, forged, for another run or file, or expired"),
            "404": _r("NotFound"),
        },
    }},
    "/api/skiptrace": {"post": {
        "operationId": "skiptraceOne",
        "summary": "Skip-trace one lead now (a one-item run, traceable like any other; write scope)",
        "parameters": [_IDEMPOTENCY_PARAM],
        "requestBody": {"required": True, "content": {_JSON_BODY: {
            "schema": _ref("SkiptraceRequest"),
            "example": {"lead": _EXAMPLE_LEAD, "policy": _EXAMPLE_POLICY},
        }}},
        "responses": {
            "200": {**_json(_ref("SkiptraceResult"), "the lead's contacts"),
                    "links": {"contacts": {"operationId": "leadContacts",
                                           "parameters": {"lead_id": "$response.body#/lead_id"}}}},
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
            "403": _r("Forbidden"),
            "409": _r("IdempotencyConflict"),
            "413": _r("PayloadTooLarge"),
            "429": _r("BudgetPause"),
            "502": _json(_ref("ProviderError"), "the provider failed this lead"),
            "503": _json(_ref("CircuitOpen"),
                         "the provider cannot be asked now: circuit open, not configured, or no answer in time",
                         _RETRY_AFTER_HEADER),
        },
    }},
    "/api/leads/{lead_id}/contacts": {"get": {
        "operationId": "leadContacts",
        "summary": "The lead's phones (E.164) and emails with provenance",
        "parameters": [{"name": "lead_id", "in": "path", "required": True,
                        "schema": {"type": "string", "minLength": 1},
                        "description": "the lead's id, percent-encoded (an id from a CSV may hold '/': send %2F)"}],
        "responses": {"200": _json(_ref("Contacts"), "the contacts"), "401": _r("Unauthorized"),
                      "404": _r("NotFound")},
    }},
    "/api/exports/contacts.csv": {"get": {
        "operationId": "contactsExport",
        "summary": "The contacts as the dialer CSV (profile seed, the default) or the wide CSV, streamed",
        "description": "The console's export: UTF-8 with BOM, every field quoted, CRLF. `seed`: Phone1..3 only "
                       "callable numbers (not DNC, not TCPA, not a litigator's or deceased person's, DNC status "
                       "no older than DNC_MAX_AGE_DAYS), then DNC_Excluded and DNC_Stale. `wide`: Phone1..10 with "
                       "type, DNC, TCPA, person and flags, Email1..5. Filters combine (AND); unknown query "
                       "parameters are ignored.",
        "parameters": [
            {"name": "profile", "in": "query", "required": False, "schema": {"enum": ["seed", "wide"]},
             "description": "default seed"},
            {"name": "run_id", "in": "query", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]*$"},
             "description": "the leads of one run"},
            {"name": "source", "in": "query", "required": False,
             "schema": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[^\\x00]*$"},
             "description": "the leads of runs with this source label"},
            {"name": "has_phone", "in": "query", "required": False, "schema": {"enum": ["yes", "dnc_only", "no"]},
             "description": "yes: a callable number; dnc_only: numbers, none callable; no: no number"},
            {"name": "has_email", "in": "query", "required": False, "schema": {"enum": ["yes", "no"]}},
            {"name": "updated_since", "in": "query", "required": False,
             "schema": {"enum": ["1d", "7d", "30d", "never"]}},
            {"name": "cached", "in": "query", "required": False, "schema": {"enum": ["yes", "stale", "no"]}},
            {"name": "dnc_stale", "in": "query", "required": False, "schema": {"enum": ["yes", "no"]},
             "description": "yes: a number kept out only because its DNC status is stale"},
        ],
        "responses": {
            "200": {"description": "the CSV (a header row even when nothing matches)",
                    "content": {"text/csv": {"schema": {"type": "string"}}}},
            "400": _r("ValidationError"),
            "401": _r("Unauthorized"),
        },
    }},
    "/api/debug/skiptrace-latest": {"get": {
        "operationId": "debugLatest",
        "summary": "Latest provider calls with sanitized request/response, newest first",
        "parameters": [{"name": "limit", "in": "query", "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100}, "description": "default 10"}],
        "responses": {"200": _json(_ref("DebugCalls"), "the calls"), "400": _r("ValidationError"),
                      "401": _r("Unauthorized")},
    }},
}

INFO = {
    "title": "Convexa skip-trace API",
    "version": API_VERSION,
    "description": (
        "Every /api/* route but /api/health, /api/openapi.json and the signed artifact links needs "
        "`Authorization: Bearer <ADMIN_TOKEN>` (compared in constant time). Every answer is JSON; errors "
        'are `{"error": "<Code>", "detail": "...", ...}`: 401 Unauthorized, 400 ValidationError (with '
        "`fields`), 404 NotFound (also for an unknown path under /api/), 405 MethodNotAllowed (with an "
        "Allow header), 409 NotReady, 413 PayloadTooLarge, 429 BudgetPause and 503 CircuitOpen (with "
        "`retry_after` and a Retry-After header), 502 ProviderError."
    ),
}


def document() -> dict[str, Any]:
    """A fresh copy of the whole document (callers may mutate it)."""
    return copy.deepcopy({
        "openapi": OPENAPI_VERSION,
        "info": INFO,
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "a scoped API key (`manage.py api_key create NAME --scope "
                                              "read|write|admin`) or the server's ADMIN_TOKEN (admin scope). "
                                              "read: every GET; write: also create, pause and resume runs and "
                                              "POST /api/skiptrace; admin: also overrideBudget=1. A key without "
                                              "the scope gets 403 Forbidden"},
            },
            "schemas": SCHEMAS,
            "responses": RESPONSES,
        },
    })


_CACHED: dict[str, Any] | None = None


def openapi_json(request: HttpRequest) -> JsonResponse:
    """``GET /api/openapi.json``: open, read-only."""
    if request.method != "GET":
        response = error("MethodNotAllowed", 405, "use GET")
        response["Allow"] = "GET"
        return response
    global _CACHED
    if _CACHED is None:
        _CACHED = document()
    return JsonResponse(_CACHED, json_dumps_params={"ensure_ascii": False})


openapi_json.csrf_exempt = True  # type: ignore[attr-defined]  # read-only, no cookies
