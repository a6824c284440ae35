"""The skip-trace JSON API. Views stay thin: they validate, call a service, serialize."""

from __future__ import annotations

import datetime as dt
import time

from django.conf import settings
from django.db import connection
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from integrations.idempotency import KeyProblem, idempotent
from skiptrace import admission, guards, reports, runs, selectors, signing
from skiptrace.api import api_auth, error, require_scope
from skiptrace.intake import LeadValidationError, is_text, parse_json_leads
from skiptrace.models import AuditAction, AuditEvent, Run
from skiptrace.money import Policy


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


POLICY_KEYS = ("force", "fallback", "retry_sanitized")
RUN_BODY_KEYS = frozenset(("source_label", "leads", "policy"))
ONE_LEAD_BODY_KEYS = frozenset(("lead", "policy"))


def _unknown_keys(body: dict, known: frozenset[str], prefix: str = "") -> dict[str, str]:
    """Strict bodies: a misspelt key ("forse") is an error naming it, never silently ignored."""
    return {f"{prefix}{str(k)[:64]}": "unknown key" for k in body if k not in known}


def _policy(raw: object) -> Policy | dict[str, str]:
    """The request's policy, or a dict of field errors."""
    default = runs.default_policy()
    if raw is None:
        return default
    if not isinstance(raw, dict):
        return {"policy": "must be an object"}
    errors = _unknown_keys(raw, frozenset(POLICY_KEYS), "policy.")
    errors.update({f"policy.{k}": "must be true or false" for k in POLICY_KEYS
                   if k in raw and raw[k] is not None and not isinstance(raw[k], bool)})
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


def _refused(refusal: admission.Refusal) -> JsonResponse:
    return error(refusal.error, refusal.status, refusal.detail, **refusal.fields)


def _budget_pause(now: dt.datetime) -> JsonResponse:
    return _refused(admission.budget_refusal(now))


def _idempotent(request: HttpRequest, route: str, handle) -> HttpResponse:
    principal = getattr(request, "principal", None)
    try:
        return idempotent(request, principal=principal.name if principal else "-", route=route, handle=handle)
    except KeyProblem as exc:
        return error(exc.code, exc.status, exc.detail, fields={"Idempotency-Key": exc.detail})


# --- runs ----------------------------------------------------------------------------------------


@csrf_exempt  # bearer-token API: each method's view checks its own credential and scope
def runs_collection(request: HttpRequest) -> HttpResponse:
    """``GET`` lists runs, ``POST`` creates one."""
    if request.method == "GET":
        return runs_list(request)
    if request.method == "POST":
        return runs_create(request)
    return _method_not_allowed(("GET", "POST"))


MAX_LIST_LIMIT = 200


@api_auth(("GET",))
def runs_list(request: HttpRequest) -> HttpResponse:
    """Newest first, keyset-paginated: ``next`` is the cursor of the page after this one."""
    raw_limit = request.GET.get("limit", "50")
    if not (raw_limit.isascii() and raw_limit.isdigit()) or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        return error("ValidationError", 400, f"limit must be 1..{MAX_LIST_LIMIT}",
                     fields={"limit": f"must be an integer 1..{MAX_LIST_LIMIT}"})
    state = request.GET.get("state")
    if state is not None and state not in runs.RUN_STATES:
        return error("ValidationError", 400, f"state must be one of {', '.join(runs.RUN_STATES)}",
                     fields={"state": f"must be one of {', '.join(runs.RUN_STATES)}"})
    label = request.GET.get("label")
    if label is not None and (len(label) > 200 or "\x00" in label):
        return error("ValidationError", 400, "label must be at most 200 characters", fields={"label": "too long"})
    try:
        page, cursor = runs.runs_page(limit=int(raw_limit), state=state, label=label,
                                      cursor=request.GET.get("cursor"))
    except ValueError as exc:
        return error("ValidationError", 400, str(exc), fields={"cursor": str(exc)})
    from skiptrace.selectors import run_money

    money = run_money([r.run_id for r in page])
    return JsonResponse({"runs": [runs.run_status(r, money[r.run_id]) for r in page], "next": cursor})


@api_auth(("POST",), json_body=True)
def runs_create(request: HttpRequest) -> HttpResponse:
    if request.GET.get("dry_run") == "1":  # a quote creates nothing: nothing to make idempotent
        return _runs_create(request)
    return _idempotent(request, "runs.create", lambda: _runs_create(request))


def _runs_create(request: HttpRequest) -> HttpResponse:
    body = request.json  # type: ignore[attr-defined]
    unknown = _unknown_keys(body, RUN_BODY_KEYS)
    if unknown:
        return error("ValidationError", 400, f"unknown key(s): {', '.join(unknown)}", fields=unknown)
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
    dry_run = request.GET.get("dry_run", "0")
    if dry_run not in ("0", "1"):
        return error("ValidationError", 400, "dry_run must be 0 or 1", fields={"dry_run": "must be 0 or 1"})
    if dry_run == "1":  # a price before paying: nothing is created, nothing is sent
        return JsonResponse({"quote": admission.quote(parsed, policy=policy, now=now)})
    decision = admission.admit(lambda: admission.lead_signatures(parsed), policy=policy, now=now)
    if decision.refusal is not None:
        return _refused(decision.refusal)
    created = runs.run_create(source_label=label, leads=parsed, policy=policy, now=now)
    via = _via(request)
    Run.objects.filter(pk=created.run.pk).update(created_via=via)
    AuditEvent.record(AuditAction.RUN_CREATED, run_id=created.run.run_id, via=via, detail=f"{created.total} leads")
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
    if override and (forbidden := require_scope(request, "admin")) is not None:
        return forbidden  # going past the day's cap is an admin's decision
    now = timezone.now()
    if not override and not run.override_budget and guards.budget_exhausted(now):
        return _budget_pause(now)
    requeued = runs.run_resume(run=run, override_budget=override, now=now)
    AuditEvent.record(AuditAction.BUDGET_OVERRIDE if override else AuditAction.RUN_RESUMED, run_id=run.run_id,
                      via=_via(request), detail=f"{requeued} items requeued")
    return JsonResponse({"run_id": run.run_id, "requeued": requeued, "override_budget": override})


@api_auth(("POST",))
def run_pause(request: HttpRequest, run_id: str) -> HttpResponse:
    """An operator's pause (``write`` scope): in-flight requests finish, nothing new is claimed."""
    run = _run_or_404(run_id)
    if isinstance(run, JsonResponse):
        return run
    if run.finished_at is not None:
        return error("Conflict", 409, "the run is finished; there is nothing to pause", state=run.state)
    runs.run_pause(run=run)
    AuditEvent.record(AuditAction.RUN_PAUSED, run_id=run.run_id, via=_via(request))
    run.refresh_from_db()
    return JsonResponse(runs.run_status(run))


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
    run = Run.objects.filter(run_id=run_id).first()
    if run is not None:
        reports.refresh_artifacts_if_stale(run)  # a number whose DNC status went stale leaves Phone1..3
    response = FileResponse(path.open("rb"), content_type=signing.ARTIFACTS[name])
    response["Content-Disposition"] = f'attachment; filename="{run_id}-{name}"'
    return response


# --- one lead now -------------------------------------------------------------------------------


@api_auth(("POST",), json_body=True)
def skiptrace_one(request: HttpRequest) -> HttpResponse:
    return _idempotent(request, "skiptrace.one", lambda: _skiptrace_one(request))


def _skiptrace_one(request: HttpRequest) -> HttpResponse:
    body = request.json  # type: ignore[attr-defined]
    lead = body.get("lead")
    if not isinstance(lead, dict):
        return error("ValidationError", 400, "lead must be an object",
                     fields={"lead": "must be an object", **_unknown_keys(body, ONE_LEAD_BODY_KEYS)})
    unknown = _unknown_keys(body, ONE_LEAD_BODY_KEYS)
    if unknown:
        return error("ValidationError", 400, f"unknown key(s): {', '.join(unknown)}", fields=unknown)
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
    data = selectors.metrics_snapshot(timezone.now())
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
    calls = selectors.latest_calls(int(raw))
    return JsonResponse({"calls": calls})


def _via(request: HttpRequest) -> str:
    """How an API caller is named in the audit trail: ``api:<key name>`` or ``api:admin-token``."""
    principal = getattr(request, "principal", None)
    return (f"api:{principal.name}" if principal is not None else "api")[:100]
