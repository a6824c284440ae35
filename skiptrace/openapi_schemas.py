"""The component schemas of the OpenAPI document (``skiptrace.openapi``): errors, inputs and answers,
and the small builders they share. Data only: the paths, responses and the view are in ``openapi``."""

from __future__ import annotations

from typing import Any

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
            "cache_hits": _INT0,
            "provider_calls": {**_INT0, "description": "provider call rows (sanitized retries and errors included)"},
            "provider_requests": {**_INT0, "description": "HTTP requests to the provider (a request holds up to 100 calls)"},
            "cost_usd": _NUM0,
            "in_flight_usd": {**_NUM0, "description": "worst case of the calls still open (not yet settled)"},
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
