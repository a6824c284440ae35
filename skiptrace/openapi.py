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
from skiptrace.intake import MAX_FIELD_CHARS, MAX_LEAD_ID_CHARS, MAX_LEADS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_INT0 = {"type": "integer", "minimum": 0}
_NUM0 = {"type": "number", "minimum": 0}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_DATETIME = {"type": "string", "format": "date-time"}


def _error_schema(code: str | list[str], extra: dict[str, Any] | None = None, required: tuple[str, ...] = ()) -> dict:
    """``{"error": code, "detail": str, ...extra}``."""
    code_schema = {"const": code} if isinstance(code, str) else {"enum": code}
    return {
        "allOf": [
            _ref("Error"),
            {
                "type": "object",
                "required": ["error", *required],
                "properties": {"error": code_schema, **(extra or {})},
            },
        ]
    }


# At least one character that is neither NUL (dropped) nor whitespace (stripped): exactly the
# characters Python's str.strip() removes, spelled out because JSON Schema's \s (ECMA-262) differs.
_NOT_BLANK = r"[^\x00\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
_RETRY_AFTER = {"type": "integer", "minimum": 0, "description": "seconds to wait before trying again"}

SCHEMAS: dict[str, Any] = {
    # --- errors ---------------------------------------------------------------------------------
    "Error": {
        "type": "object",
        "description": "Every error answer of /api/*: a code, a human-readable detail, and the fields "
        "the code documents. Never an HTML page.",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "the error code, e.g. NotFound"},
            "detail": {"type": "string", "minLength": 1},
        },
    },
    "Unauthorized": _error_schema("Unauthorized"),
    "Forbidden": _error_schema("Forbidden", {"scope": {"enum": ["read", "write", "admin", "none"]},
                                             "required_scope": {"enum": ["read", "write", "admin"]}}),
    "IdempotencyConflict": _error_schema(["IdempotencyConflict", "Conflict"]),
    "NotFound": _error_schema("NotFound"),
    "PayloadTooLarge": _error_schema("PayloadTooLarge"),
    "ValidationError": _error_schema(
        "ValidationError",
        {"fields": {
            "type": "object",
            "description": 'what was wrong, by field: {"leads[3].zip": "must be a string"}',
            "additionalProperties": {"type": "string"},
        }},
        required=("fields",),
    ),
    "NotReady": _error_schema("NotReady", {"state": {"enum": ["queued", "running", "paused", "finished"]}},
                              required=("state",)),
    "BudgetPause": _error_schema(
        "BudgetPause",
        {"reason": {"const": "daily_budget"},
         "retry_after": {**_RETRY_AFTER, "description": "seconds to the next budget day"},
         "daily_cap_usd": {"type": "number", "minimum": 0},
         "spent_usd": {"type": "number", "minimum": 0,
                       "description": "today's spend: settled cost plus the worst case of what is in flight"},
         "resets_at": {**_DATETIME, "description": "when the next budget day starts"}},
        required=("reason", "retry_after", "daily_cap_usd", "spent_usd", "resets_at"),
    ),
    "CircuitOpen": _error_schema(
        ["CircuitOpen", "ProviderNotConfigured", "ProviderUnavailable"],
        {"retry_after": {**_RETRY_AFTER, "description": "CircuitOpen: seconds to the next probe of the provider"}},
        required=("retry_after",),
    ),
    "ProviderError": _error_schema("ProviderError", {"run_id": _STR}, required=("run_id",)),
    # --- input ----------------------------------------------------------------------------------
    "Lead": {
        "type": "object",
        "description": (
            "A lead needs a street and either a zip or city+state. A value of the wrong JSON type is "
            "refused with 400 naming the lead's index and field. A well-typed lead that cannot run (no "
            f"street, a bad zip or state, a text field over {MAX_FIELD_CHARS} characters, a zip over 16 "
            "or a state over 32) is accepted as a `failed` item with `invalid_input: <why>`. An unknown "
            "key is a 400 naming it."
        ),
        "required": ["lead_id"],
        "additionalProperties": False,
        "properties": {
            "lead_id": {"type": "string", "minLength": 1, "maxLength": MAX_LEAD_ID_CHARS, "pattern": _NOT_BLANK,
                        "description": f"1-{MAX_LEAD_ID_CHARS} characters, not all blank; surrounding blanks "
                                       "and NUL characters are dropped"},
            "first_name": _nullable(_STR),
            "last_name": _nullable(_STR),
            "street": _nullable(_STR),
            "city": _nullable(_STR),
            "state": _nullable(_STR),
            "zip": _nullable(_STR),
        },
    },
    "Policy": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "force": {**_nullable(_BOOL), "description": "re-fetch even when cached"},
            "fallback": {**_nullable(_BOOL),
                         "description": "serve an expired cache entry (marked stale) when the provider is unavailable"},
            "retry_sanitized": {**_nullable(_BOOL),
                                "description": "allow the one retry without the unit (default SANITIZED_RETRY_ENABLED)"},
        },
    },
    "RunCreateRequest": {
        "type": "object",
        "required": ["leads"],
        "additionalProperties": False,
        "properties": {
            "source_label": {**_nullable({"type": "string", "maxLength": 200})},
            "leads": {"type": "array", "minItems": 1, "maxItems": MAX_LEADS, "items": _ref("Lead"),
                      "description": f"at most {MAX_LEADS} leads and 50 MB per request (413 beyond)"},
            "policy": _nullable(_ref("Policy")),
        },
    },
    "SkiptraceRequest": {
        "type": "object",
        "required": ["lead"],
        "additionalProperties": False,
        "properties": {"lead": _ref("Lead"), "policy": _nullable(_ref("Policy"))},
    },
    # --- answers --------------------------------------------------------------------------------
    "RunCreated": {
        "type": "object",
        "required": ["run_id", "total", "invalid"],
        "properties": {"run_id": _STR, "total": _INT0,
                       "invalid": {**_INT0, "description": "leads failed at intake (invalid_input)"}},
    },
    "RunQuote": {
        "type": "object",
        "required": ["quote"],
        "properties": {"quote": {
            "type": "object",
            "description": "POST /api/skiptrace-runs?dry_run=1: what the run would cost; nothing is created or sent",
            "required": ["rows", "invalid", "duplicates", "cached", "billable", "worst_case_usd", "budget_left_usd"],
            "properties": {
                "rows": _INT0, "invalid": _INT0,
                "duplicates": {**_INT0, "description": "leads another lead of the request already covers"},
                "cached": {**_INT0, "description": "distinct inputs the cache answers for free (0 with force)"},
                "billable": {**_INT0, "description": "distinct inputs that would each be sent once"},
                "worst_case_usd": {"type": "number", "minimum": 0},
                "budget_left_usd": {"type": "number", "minimum": 0},
            },
        }},
    },
    "RunList": {
        "type": "object",
        "required": ["runs", "next"],
        "properties": {"runs": {"type": "array", "items": _ref("RunStatus")},
                       "next": {**_nullable(_STR), "description": "cursor of the next page; null on the last"}},
    },
    "RunStatus": {
        "type": "object",
        "required": ["run_id", "source_label", "state", "total", "queued", "in_flight", "done", "failed",
                     "cache_hits", "provider_calls", "cost_usd", "soft_paused", "reason", "started_at",
                     "finished_at"],
        "properties": {
            "run_id": _STR,
            "source_label": _nullable(_STR),
            "state": {"enum": ["queued", "running", "paused", "finished"]},
            "total": _INT0, "queued": _INT0, "in_flight": _INT0, "done": _INT0, "failed": _INT0,
            "cache_hits": _INT0, "provider_calls": _INT0, "cost_usd": _NUM0,
            "soft_paused": _BOOL,
            "override_budget": _BOOL,
            "reason": {**_nullable(_STR), "description": "daily_budget, circuit_open, provider_not_configured, ..."},
            "started_at": _nullable(_DATETIME),
            "finished_at": _nullable(_DATETIME),
            "created_at": _nullable(_DATETIME),
        },
    },
    "ResumeResult": {
        "type": "object",
        "required": ["run_id", "requeued", "override_budget"],
        "properties": {"run_id": _STR, "requeued": _INT0, "override_budget": _BOOL},
    },
    "Report": {
        "type": "object",
        "required": ["run_id", "source_label", "started_at", "finished_at", "duration_s", "totals", "hit_rate",
                     "cache_hit_ratio", "budgets", "errors", "samples"],
        "properties": {
            "run_id": _STR,
            "source_label": _STR,
            "started_at": _nullable(_DATETIME),
            "finished_at": _nullable(_DATETIME),
            "duration_s": _NUM0,
            "totals": {
                "type": "object",
                "required": ["total", "done", "failed", "cached_hits", "provider_calls", "cost_usd"],
                "properties": {"total": _INT0, "done": _INT0, "failed": _INT0, "cached_hits": _INT0,
                               "provider_calls": _INT0, "cost_usd": _NUM0},
            },
            "hit_rate": {
                "type": "object",
                "required": ["phone_any_pct", "email_any_pct"],
                "properties": {"phone_any_pct": {"type": "number", "minimum": 0, "maximum": 100},
                               "email_any_pct": {"type": "number", "minimum": 0, "maximum": 100}},
            },
            "cache_hit_ratio": {"type": "number", "minimum": 0, "maximum": 1},
            "budgets": {
                "type": "object",
                "required": ["daily_cap_usd", "spent_usd", "soft_paused"],
                "properties": {"daily_cap_usd": _NUM0, "spent_usd": _NUM0, "soft_paused": _BOOL},
            },
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["reason", "count", "samples"],
                    "properties": {"reason": _STR, "count": _INT0, "samples": {"type": "array", "items": _STR}},
                },
            },
            "samples": {
                "type": "object",
                "required": ["enriched", "failed"],
                "properties": {
                    "enriched": {"type": "array", "items": {
                        "type": "object",
                        "required": ["lead_id", "phones", "emails"],
                        "properties": {
                            "lead_id": _STR,
                            "phones": {"type": "array", "items": _STR},
                            "emails": {"type": "array", "items": _STR},
                            "cached": _BOOL,
                            "provider_call_id": _nullable({"type": "integer"}),
                            "attempts": {"type": "array", "items": {
                                "type": "object",
                                "required": ["provider_call_id", "label"],
                                "properties": {"provider_call_id": _nullable({"type": "integer"}), "label": _STR},
                            }},
                        },
                    }},
                    "failed": {"type": "array", "items": {
                        "type": "object",
                        "required": ["lead_id", "last_error"],
                        "properties": {"lead_id": _STR, "last_error": _STR},
                    }},
                },
            },
            "state": {"enum": ["queued", "running", "paused", "finished"]},
        },
    },
    "ArtifactLinks": {
        "type": "object",
        "required": ["run_id", "expires_at", "report_json_url", "enriched_csv_url"],
        "properties": {
            "run_id": _STR,
            "expires_at": _DATETIME,
            "report_json_url": {"type": "string", "format": "uri",
                                "description": "signed; needs no token; expires at expires_at"},
            "enriched_csv_url": {"type": "string", "format": "uri"},
        },
    },
    "Phone": {
        "type": "object",
        "required": ["number", "isDoNotCall"],
        "properties": {
            "number": {"type": "string", "pattern": r"^\+1[0-9]{10}$", "description": "E.164"},
            "type": _nullable(_STR),
            "isDoNotCall": _BOOL,
            "isTcpa": _BOOL,
            "confidence": _nullable({"type": "integer"}),
            "source": _STR,
            "rank": _nullable({"type": "integer"}),
            "carrier": _nullable(_STR),
            "tested": _nullable(_BOOL),
            "reachable": _nullable(_BOOL),
            "callable": _BOOL,
            "dncCheckedAt": {**_nullable(_DATETIME), "description": "when the provider checked the DNC status "
                                                                    "(the answer's time; null: not known)"},
            "dncStale": {**_BOOL, "description": "the DNC status is older than DNC_MAX_AGE_DAYS"},
            "person": {"type": ["object", "integer", "null"],
                       "description": "the person the number belongs to: an object (contacts API) or an index "
                                      "into `persons` (POST /api/skiptrace)"},
        },
    },
    "Email": {
        "type": "object",
        "required": ["address"],
        "properties": {"address": _STR, "isPrimary": _BOOL, "confidence": _nullable({"type": "integer"}),
                       "source": _STR, "rank": _nullable({"type": "integer"}), "tested": _nullable(_BOOL),
                       "person": {"type": ["object", "integer", "null"]}},
    },
    "Person": {
        "type": "object",
        "properties": {"name": _STR, "first": _STR, "last": _STR, "propertyOwner": _nullable(_BOOL),
                       "litigator": _BOOL, "deceased": _BOOL},
    },
    "SkiptraceResult": {
        "type": "object",
        "required": ["lead_id", "cached", "payload_hash", "provider_call_ids", "phones", "emails"],
        "properties": {
            "lead_id": _STR,
            "run_id": {**_STR, "description": "the one-item run (source_label api:single) that served it"},
            "cached": _BOOL,
            "stale": _BOOL,
            "payload_hash": _nullable(_STR),
            "provider_call_ids": {"type": "array", "items": {"type": "integer"}},
            "matched": _nullable(_BOOL),
            "phones": {"type": "array", "items": _ref("Phone")},
            "emails": {"type": "array", "items": _ref("Email")},
            "persons": {"type": "array", "items": _ref("Person")},
        },
    },
    "Contacts": {
        "type": "object",
        "required": ["leadId", "cached", "updatedAt", "phones", "emails"],
        "properties": {
            "leadId": _STR,
            "cached": _BOOL,
            "stale": _BOOL,
            "updatedAt": _nullable(_DATETIME),
            "matched": _nullable(_BOOL),
            "providerCallId": _nullable({"type": "integer"}),
            "runId": _nullable(_STR),
            "phones": {"type": "array", "items": _ref("Phone")},
            "emails": {"type": "array", "items": _ref("Email")},
        },
    },
    "Health": {
        "type": "object",
        "required": ["ok", "db", "provider"],
        "properties": {
            "ok": _BOOL,
            "db": _BOOL,
            "provider": {"enum": ["ready", "circuit_open", "not_configured", "unknown"],
                         "description": "unknown only while the database is down"},
        },
    },
    "Metrics": {
        "type": "object",
        "required": ["provider_calls_total", "cache_hits_total", "budget_spent_cents_total", "circuit_state",
                     "rps_current", "queue_depth"],
        "properties": {
            "provider_calls_total": {
                "type": "object",
                "required": ["2xx", "4xx", "5xx"],
                "properties": {"2xx": _INT0, "4xx": _INT0, "5xx": _INT0},
            },
            "cache_hits_total": _INT0,
            "budget_spent_cents_total": _INT0,
            "circuit_state": {"enum": ["closed", "open", "half_open"]},
            "rps_current": _NUM0,
            "queue_depth": _INT0,
            "provider_calls_lost_total": _INT0,
            "provider_calls_unreadable_total": _INT0,
            "provider_bill_mismatch_total": _INT0,
            "in_flight": _INT0,
            "budget_spent_cents_today": _INT0,
            "budget_cap_cents": _INT0,
        },
    },
    "DebugCalls": {
        "type": "object",
        "required": ["calls"],
        "properties": {"calls": {"type": "array", "items": {
            "type": "object",
            "required": ["provider_call_id", "run_id", "lead_id", "state", "status_code", "match_count",
                         "cost_cents", "attempt_reason", "request", "response", "created_at"],
            "properties": {
                "provider_call_id": {"type": "integer"},
                "run_id": _nullable(_STR),
                "lead_id": _STR,
                "state": {"enum": ["reserved", "sent", "completed", "errored", "lost", "unreadable"]},
                "status_code": _nullable({"type": "integer"}),
                "match_count": _nullable({"type": "integer"}),
                "matched": _nullable(_BOOL),
                "cost_cents": _INT0,
                "attempt_reason": _nullable(_STR),
                "label": _nullable(_STR),
                "request": {"description": "sanitized provider request (no full phone, email or token)"},
                "response": {"description": "sanitized provider response"},
                "error": _nullable(_STR),
                "created_at": _DATETIME,
            },
        }}},
    },
    "OpenApiDocument": {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {"openapi": _STR, "info": {"type": "object"}, "paths": {"type": "object"}},
    },
}


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
