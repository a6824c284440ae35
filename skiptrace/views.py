"""The skip-trace JSON API. Views stay thin: they validate, call a service, serialize."""

from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.db import connection
from django.db.models import Count, Q, Sum
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from skiptrace import guards, reports, runs, signing
from skiptrace.api import api_auth, error
from skiptrace.intake import LeadValidationError, is_text, parse_json_leads
from skiptrace.models import CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.provider import sanitize_for_debug
from skiptrace.service import Policy


@csrf_exempt  # open and read-only: a POST is a 405, not Django's CSRF page
def health(request: HttpRequest) -> JsonResponse:
    """Open to everyone (load balancers): ``{ok, db, provider}``; 503 when the database is down."""
    if request.method != "GET":
        return _method_not_allowed(("GET",))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        db_ok = True
    except Exception:
        db_ok = False
    provider = guards.provider_status() if db_ok else "unknown"
    return JsonResponse({"ok": db_ok, "db": db_ok, "provider": provider}, status=200 if db_ok else 503)


@csrf_exempt  # no cookies are involved under /api/: a POST to a wrong path is a 404, not a CSRF page
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return error("NotFound", 404, f"no such route: {request.path}")


# --- helpers -------------------------------------------------------------------------------------


def _method_not_allowed(methods: tuple[str, ...]) -> JsonResponse:
    response = error("MethodNotAllowed", 405, f"use {' or '.join(methods)}")
    response["Allow"] = ", ".join(methods)
    return response


def _policy(raw: object) -> Policy | dict[str, str]:
    """The request's policy, or a dict of field errors."""
    default = runs.default_policy()
    if raw is None:
        return default
    if not isinstance(raw, dict):
        return {"policy": "must be an object"}
    errors = {f"policy.{k}": "must be true or false" for k in ("force", "fallback", "retry_sanitized")
              if k in raw and raw[k] is not None and not isinstance(raw[k], bool)}
    if errors:
        return errors
    return Policy(
        force=bool(raw.get("force") or False),
        fallback=bool(raw.get("fallback") or False),
        retry_sanitized=default.retry_sanitized if raw.get("retry_sanitized") is None else raw["retry_sanitized"],
    )


def valid_id(value: str) -> bool:
    """Ids are at most 64 characters and never hold NUL (PostgreSQL text cannot)."""
    return 0 < len(value) <= 64 and "\x00" not in value


def _run_or_404(run_id: str) -> Run | JsonResponse:
    run = Run.objects.filter(run_id=run_id).first() if valid_id(run_id) else None
    return run if run is not None else error("NotFound", 404, f"no run {run_id!r}")


def _budget_pause(now: dt.datetime) -> JsonResponse:
    return error("BudgetPause", 429, "today's skip-trace budget is spent", **runs.budget_pause_fields(now))


# --- runs ----------------------------------------------------------------------------------------


@api_auth(("POST",), json_body=True)
def runs_create(request: HttpRequest) -> HttpResponse:
    body = request.json  # type: ignore[attr-defined]
    label = body.get("source_label")
    if label is not None and (not isinstance(label, str) or len(label) > 200 or not is_text(label)):
        return error("ValidationError", 400, "source_label must be a string of at most 200 characters",
                     fields={"source_label": "must be a string of at most 200 characters"})
    if label is not None:
        label = label.replace("\x00", "")  # PostgreSQL text cannot hold NUL
    leads = body.get("leads")
    if isinstance(leads, list) and len(leads) > settings.MAX_LEADS_PER_REQUEST:
        return error("PayloadTooLarge", 413, f"at most {settings.MAX_LEADS_PER_REQUEST} leads per request")
    policy = _policy(body.get("policy"))
    if isinstance(policy, dict):
        return error("ValidationError", 400, "bad policy", fields=policy)
    try:
        parsed = parse_json_leads(leads)
    except LeadValidationError as exc:
        return error("ValidationError", 400, "some leads are not well-formed", fields=exc.fields)
    now = timezone.now()
    if guards.budget_exhausted(now):
        return _budget_pause(now)
    created = runs.run_create(source_label=label, leads=parsed, policy=policy, now=now)
    return JsonResponse({"run_id": created.run.run_id, "total": created.total, "invalid": created.invalid})


@api_auth(("GET",))
def run_status(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_or_404(run_id)
    if isinstance(run, JsonResponse):
        return run
    return JsonResponse(runs.run_status(run))


@api_auth(("POST",))
def run_resume(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_or_404(run_id)
    if isinstance(run, JsonResponse):
        return run
    raw = request.GET.get("overrideBudget", "0")
    if raw not in ("0", "1"):
        return error("ValidationError", 400, "overrideBudget must be 0 or 1", fields={"overrideBudget": "must be 0 or 1"})
    override = raw == "1"
    now = timezone.now()
    if not override and not run.override_budget and guards.budget_exhausted(now):
        return _budget_pause(now)
    requeued = runs.run_resume(run=run, override_budget=override, now=now)
    return JsonResponse({"run_id": run.run_id, "requeued": requeued, "override_budget": override})


@api_auth(("GET",))
def run_report(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_or_404(run_id)
    if isinstance(run, JsonResponse):
        return run
    return JsonResponse(reports.run_report(run))


@api_auth(("GET",))
def run_artifacts(request: HttpRequest, run_id: str) -> HttpResponse:
    run = _run_or_404(run_id)
    if isinstance(run, JsonResponse):
        return run
    paths = reports.artifact_paths(run.run_id)
    if run.finished_at is None or not all(p.exists() for p in paths):
        return error("NotReady", 409, f"the run is {run.state}; its files are written when it finishes",
                     state=run.state)
    urls = signing.artifact_urls(run.run_id, now=int(time.time()), base_url=request.build_absolute_uri("/").rstrip("/"))
    return JsonResponse({"run_id": run.run_id, **urls})


MAX_ARTIFACT_TOKEN_CHARS = 200


@csrf_exempt  # no cookies involved: the signed token is the permission
def artifact_download(request: HttpRequest, run_id: str, name: str) -> HttpResponse:
    """Served without the admin token: the signed, expiring ``token`` is the permission."""
    if request.method != "GET":
        return _method_not_allowed(("GET",))
    token = request.GET.get("token", "")
    # A real token is "<10 digits>.<43 characters>"; anything far longer is refused before it is
    # parsed (an expiry of 5,000 digits would make int() raise).
    if (name not in signing.ARTIFACTS or len(token) > MAX_ARTIFACT_TOKEN_CHARS
            or not signing.verify_artifact(run_id, name, token, now=int(time.time()))):
        return error("Forbidden", 403, "link is invalid or expired; ask /artifacts for a new one")
    report_path, csv_path = reports.artifact_paths(run_id)
    path = report_path if name == "report.json" else csv_path
    if not path.exists():
        return error("NotFound", 404, "file not found")
    response = FileResponse(path.open("rb"), content_type=signing.ARTIFACTS[name])
    response["Content-Disposition"] = f'attachment; filename="{run_id}-{name}"'
    return response


# --- one lead now -------------------------------------------------------------------------------


@api_auth(("POST",), json_body=True)
def skiptrace_one(request: HttpRequest) -> HttpResponse:
    body = request.json  # type: ignore[attr-defined]
    lead = body.get("lead")
    if not isinstance(lead, dict):
        return error("ValidationError", 400, "lead must be an object", fields={"lead": "must be an object"})
    policy = _policy(body.get("policy"))
    if isinstance(policy, dict):
        return error("ValidationError", 400, "bad policy", fields=policy)
    try:
        parsed = parse_json_leads([lead])[0]
    except LeadValidationError as exc:
        fields = {k.replace("leads[0]", "lead"): v for k, v in exc.fields.items()}
        return error("ValidationError", 400, "the lead is not well-formed", fields=fields)
    result = runs.lead_skiptrace(lead=parsed, policy=policy)
    if result.error is not None:
        return error(result.error, result.status, result.detail, **result.fields)
    return JsonResponse(result.body)


# --- contacts, metrics, debug ---------------------------------------------------------------------


@api_auth(("GET",))
def metrics(request: HttpRequest) -> HttpResponse:
    fmt = request.GET.get("format", "json")
    if fmt not in ("json", "prometheus"):
        return error("ValidationError", 400, "format must be json or prometheus",
                     fields={"format": "must be json or prometheus"})
    now = timezone.now()
    calls = ProviderCall.objects.aggregate(
        c2=Count("id", filter=Q(status_code__gte=200, status_code__lt=300)),
        c4=Count("id", filter=Q(status_code__gte=400, status_code__lt=500)),
        c5=Count("id", filter=Q(status_code__gte=500)),
        lost=Count("id", filter=Q(state=CallState.LOST)),
        unreadable=Count("id", filter=Q(state=CallState.UNREADABLE)),
        spent=Sum("cost_cents"),
    )
    # provider requests whose matchCount billed more than their per-person matches
    mismatches = ProviderCall.objects.filter(bill_mismatch=True).values("batch_id").distinct().count()
    recent = ProviderCall.objects.filter(sent_at__gte=now - dt.timedelta(seconds=10)).values("batch_id").distinct().count()
    items = RunItem.objects.aggregate(
        cached=Count("id", filter=Q(status=ItemStatus.DONE, cached=True)),
        queued=Count("id", filter=Q(status=ItemStatus.QUEUED)),
        in_flight=Count("id", filter=Q(status=ItemStatus.IN_FLIGHT)),
    )
    data = {
        "provider_calls_total": {"2xx": calls["c2"], "4xx": calls["c4"], "5xx": calls["c5"]},
        "cache_hits_total": items["cached"],
        "budget_spent_cents_total": calls["spent"] or 0,
        "circuit_state": guards.breaker_state(now),
        "rps_current": round(recent / 10, 2),
        "queue_depth": items["queued"],
        # extras
        "provider_calls_lost_total": calls["lost"],
        "provider_calls_unreadable_total": calls["unreadable"],
        "provider_bill_mismatch_total": mismatches,
        "in_flight": items["in_flight"],
        "budget_spent_cents_today": guards.budget_spent_cents_today(now),
        "budget_cap_cents": settings.SKIP_TRACE_DAILY_BUDGET_CENTS,
    }
    if fmt == "prometheus":
        return HttpResponse(_prometheus(data), content_type="text/plain; version=0.0.4; charset=utf-8")
    return JsonResponse(data)


def _prometheus(data: dict) -> str:
    lines = ["# TYPE convexa_provider_calls_total counter"]
    for klass, n in data["provider_calls_total"].items():
        lines.append(f'convexa_provider_calls_total{{status="{klass}"}} {n}')
    states = ("closed", "open", "half_open")
    lines += ["# TYPE convexa_circuit_state gauge"]
    lines += [f'convexa_circuit_state{{state="{s}"}} {int(data["circuit_state"] == s)}' for s in states]
    for key, kind in (("cache_hits_total", "counter"), ("budget_spent_cents_total", "counter"),
                      ("rps_current", "gauge"), ("queue_depth", "gauge"), ("provider_calls_lost_total", "counter"),
                      ("provider_calls_unreadable_total", "counter"), ("provider_bill_mismatch_total", "counter"),
                      ("in_flight", "gauge"), ("budget_spent_cents_today", "gauge"), ("budget_cap_cents", "gauge")):
        lines += [f"# TYPE convexa_{key} {kind}", f"convexa_{key} {data[key]}"]
    return "\n".join(lines) + "\n"


@api_auth(("GET",))
def debug_latest(request: HttpRequest) -> HttpResponse:
    raw = request.GET.get("limit", "10")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3 and 1 <= int(raw) <= 100):
        return error("ValidationError", 400, "limit must be a whole number from 1 to 100", fields={"limit": "1..100"})
    limit = int(raw)
    import json

    def load(text: str | None):
        if not text:
            return None
        try:
            return sanitize_for_debug(json.loads(text))
        except ValueError:
            return None

    calls = [
        {
            "provider_call_id": c.pk, "run_id": c.run_id, "lead_id": c.lead_id, "state": c.state,
            "status_code": c.status_code, "match_count": c.match_count, "matched": c.matched,
            "cost_cents": c.cost_cents, "attempt_reason": c.attempt_reason, "label": c.label or None,
            "request": load(c.request_json), "response": load(c.response_json),
            "error": c.error_text, "created_at": c.created_at.isoformat(),
        }
        for c in ProviderCall.objects.order_by("-id")[:limit]
    ]
    return JsonResponse({"calls": calls})
