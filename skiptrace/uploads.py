"""The console upload as a background job: store the file, quote it, confirm, load it in chunks.

The flow an operator sees (``upload_urls`` routes it under ``/admin/skiptrace/run/upload/``):

1. **Upload** (``upload_view``): the file is streamed to ``DATA_DIR/uploads/<token>.csv`` (owner-only,
   0600: it holds personal data) and its header checked at once (binary, empty, no street column:
   the form says why and nothing is kept). An ``UploadJob`` row is created and a thread reads the
   whole file and prices it (``admission.quote``). The request returns in well under a second.
2. **Quote** (``job_page``, polling ``job_status``): rows, refused rows with their reasons,
   duplicates inside the file, leads the cache already answered (free), billable inputs, the worst
   case and what today's budget has left. Nothing exists yet but the stored file.
3. **Confirm** (``job_confirm``): the job is queued and a thread takes it; the request returns at
   once. The run is created and its items go in ``CHUNK`` rows at a time, each chunk its own short
   transaction (SQLite's write lock is released between chunks, so API submits and workers never
   wait long enough to fail). The page shows ``rows_done`` of ``rows_total`` and goes to the run
   page when the run is complete.
4. The file is deleted when the job is done, failed, cancelled, or when a quote was not confirmed
   within ``QUOTE_TTL_S`` (``uploads_sweep``).

**Who executes a job.** A daemon thread of the web process that took the request; it owns the job
through a lease renewed with every chunk. A thread dies with its process (a deploy, gunicorn
recycling a worker), so a job whose lease expired is *abandoned* and taken over — by the status poll
of anyone watching its page, and by the worker's housekeeping (``upload_jobs_kick``) — and goes on
from ``rows_done``: a chunk and the job's ``rows_done`` commit together, so nothing is inserted twice.

**Items are held until the file is in.** Each chunk's queued items carry ``not_before = HOLD`` (far
in the future), so no worker claims a half-loaded run and no recount can finish it early; when every
row is in, they are released (``not_before = NULL``), again in short chunks, and the workers woken.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import update_wrapper
from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote as url_quote
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from contacts.services import leads_upsert
from skiptrace import admission, normalize
from skiptrace.bulk import analyze_after_bulk, insert_rows
from skiptrace.intake import IntakeError, LeadInput, derive_lead_id, iter_csv_leads
from skiptrace.models import ItemStatus, Run, RunItem
from skiptrace.money import Policy, runs_refresh
from skiptrace.runs import _build as build_item  # the one rule for what a lead becomes (item + lead row)
from skiptrace.runs import new_run_id
from skiptrace.upload_models import FINAL_STATES, RUNNABLE_STATES, UploadJob, UploadState
from skiptrace.wakeup import notify_work

log = logging.getLogger("convexa.uploads")

CHUNK = 1000  # rows per insert transaction (~50 ms of SQLite's write lock)
RELEASE_CHUNK = 5000  # held items released per transaction at the end
LEASE_S = 60.0  # a job whose thread has not renewed its lease this long is taken over
START_GRACE_S = 10.0  # a job nobody took this long after it was queued is taken over too
QUOTE_TTL_S = 3600.0  # an unconfirmed quote's file is deleted after this
DB_RETRIES = 6  # a chunk that meets a locked database is retried this often (with backoff)
REFUSED_SHOWN = 25  # refused rows listed on the quote page
REASONS_SHOWN = 10
POLL_MS = 1000
# A file up to this size (~2,500 rows) is quoted and queued inside the request: it takes milliseconds
# (a few chunks), and the operator sees the quote at once. Bigger files go to a thread.
INLINE_MAX_BYTES = 256 * 1024
HOLD = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)  # not_before of items whose file is still being read
MAX_UPLOAD_BYTES = 200 * 1024 * 1024  # 100,000 rows of 200-char cells is far less; beyond this it is not a lead list

JOB_THREADS: set[threading.Thread] = set()  # live job threads (tests join them)


class LostLease(Exception):
    """Another thread took the job over (this one was presumed dead): stop without touching it."""


# --- the stored file --------------------------------------------------------------------------------


def upload_dir() -> Path:
    folder = Path(settings.DATA_DIR) / "uploads"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def file_path(token: str) -> Path:
    if not token or not all(ch.isalnum() or ch in "-_" for ch in token):
        raise ValueError("not an upload token")
    return upload_dir() / f"{token}.csv"


def file_store(upload, token: str) -> int:
    """Write the uploaded file to its owner-only path (created 0600, never readable by others)."""
    target = file_path(token)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in upload.chunks():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise IntakeError(f"the file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
                fh.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size


def file_delete(token: str) -> None:
    try:
        file_path(token).unlink(missing_ok=True)
    except (OSError, ValueError):
        log.warning("upload file of job token %s… could not be deleted", token[:6])


# --- the form --------------------------------------------------------------------------------------


class UploadForm(forms.Form):
    file = forms.FileField(label="Lead list (CSV)", help_text="UTF-8 (with or without BOM) or Windows-1252; "
                           "a header row with at least a street column (Address, Property Address, …). "
                           "Up to 100,000 rows. You see what it costs before anything is created.")
    label = forms.CharField(label="Source label", max_length=200, required=False,
                            help_text="Shown on the run and in the report; defaults to the file name.")
    force = forms.BooleanField(required=False, help_text="Re-fetch leads even when the cache has them (costs money).")
    fallback = forms.BooleanField(required=False,
                                  help_text="When the provider is down, serve expired cache entries (marked stale).")
    retry_sanitized = forms.BooleanField(required=False, label="Sanitized retry",
                                         help_text="One retry without the unit when a unit address finds nothing.")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["retry_sanitized"].initial = settings.SANITIZED_RETRY_ENABLED


def job_policy(job: UploadJob) -> Policy:
    return Policy(force=job.policy_force, fallback=job.policy_fallback, retry_sanitized=job.policy_retry_sanitized)


def _check_header(token: str) -> None:
    """Read the header and the first row now, so a file that is not a lead list is refused on the
    form (IntakeError) instead of after a wait."""
    with file_path(token).open("rb") as fh:
        if next(iter_csv_leads(fh), None) is None:
            raise IntakeError("the file has a header but no data rows")


def job_create(*, upload, label: str, policy: Policy, user, session_key: str = "",
               now: dt.datetime | None = None) -> UploadJob:
    """Store the file, check its header, create the job (``quoting``). IntakeError: nothing kept."""
    now = now or timezone.now()
    token = secrets.token_urlsafe(24)
    size = file_store(upload, token)
    try:
        _check_header(token)
        return UploadJob.objects.create(
            token=token, state=UploadState.QUOTING, created_by=user if getattr(user, "pk", None) else None,
            session_key=(session_key or "")[:64], file_name=(upload.name or "")[:255], file_bytes=size,
            label=label, policy_force=policy.force, policy_fallback=policy.fallback,
            policy_retry_sanitized=policy.retry_sanitized, created_at=now, updated_at=now,
        )
    except BaseException:
        file_delete(token)
        raise


# --- executing a job ---------------------------------------------------------------------------------


def _owner_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{threading.get_ident()}"[:96]


def job_start(job_id: int) -> threading.Thread:
    """Work the job in a daemon thread of this process (it claims the job first; a loser just ends)."""
    thread = threading.Thread(target=_job_thread, args=(job_id,), name=f"upload-job-{job_id}", daemon=True)
    JOB_THREADS.add(thread)
    thread.start()
    return thread


def _job_thread(job_id: int) -> None:
    try:
        job_execute(job_id)
    except Exception:  # the job row says what happened; a thread must not die loudly in the web process
        log.exception("upload job %s: unexpected error", job_id)
    finally:
        connection.close()  # this thread's own connection
        JOB_THREADS.discard(threading.current_thread())


def jobs_wait(timeout: float = 60.0) -> bool:
    """Join the live job threads (tests; a graceful shutdown). True when all ended in time."""
    deadline = time.monotonic() + timeout
    for thread in list(JOB_THREADS):
        thread.join(max(0.0, deadline - time.monotonic()))
    return not any(t.is_alive() for t in JOB_THREADS)


def _claim(job_id: int, owner: str, now: dt.datetime) -> UploadJob | None:
    """Take the job when nobody holds a live lease on it (an atomic conditional update)."""
    with transaction.atomic():
        taken = (
            UploadJob.objects.filter(pk=job_id, state__in=RUNNABLE_STATES)
            .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
            .update(owner=owner, lease_until=now + dt.timedelta(seconds=LEASE_S), updated_at=now)
        )
        return UploadJob.objects.get(pk=job_id) if taken else None


def _mine(job: UploadJob, owner: str, now: dt.datetime | None = None, **fields) -> None:
    """Renew the lease (and set ``fields``) only while this thread still owns the job."""
    now = now or timezone.now()
    updated = UploadJob.objects.filter(pk=job.pk, owner=owner, state__in=RUNNABLE_STATES).update(
        lease_until=now + dt.timedelta(seconds=LEASE_S), updated_at=now, **fields
    )
    if not updated:
        raise LostLease(job.pk)


def job_execute(job_id: int, *, owner: str | None = None) -> str | None:
    """Claim the job and take it as far as it goes (a quote; or the whole run). Returns its state
    afterwards, None when someone else holds it."""
    owner = owner or _owner_id()
    job = _claim(job_id, owner, timezone.now())
    if job is None:
        return None
    try:
        if job.state == UploadState.QUOTING:
            _quote(job, owner)
        else:
            _load(job, owner)
    except LostLease:
        log.info("upload job %s was taken over by another thread", job_id)
        return None
    except IntakeError as exc:  # the file is not what the quote read (or not readable at all)
        _fail(job, owner, f"{exc} — nothing was created.")
    except Exception as exc:
        log.exception("upload job %s failed", job_id)
        _fail(job, owner, f"the upload failed ({type(exc).__name__}); nothing was created. Try again.")
    return UploadJob.objects.filter(pk=job_id).values_list("state", flat=True).first()


def _fail(job: UploadJob, owner: str, error: str) -> None:
    """Failed: the partial run (if any) is removed, so nothing half-made is left; the file too."""
    now = timezone.now()
    with transaction.atomic():
        if not UploadJob.objects.filter(pk=job.pk, owner=owner, state__in=RUNNABLE_STATES).update(
            state=UploadState.FAILED, error=error[:2000], lease_until=None, updated_at=now, finished_at=now, run=None,
        ):
            return
        if job.run_id:
            Run.objects.filter(run_id=job.run_id).delete()
    file_delete(job.token)
    log.warning("upload job %s failed: %s", job.pk, error)


def _leads(job: UploadJob) -> Iterator[LeadInput]:
    with file_path(job.token).open("rb") as fh:
        yield from iter_csv_leads(fh)


def _problem(lead: LeadInput) -> str | None:
    """Why intake refuses this lead (the run's ``invalid_input`` reason), or None."""
    if lead.problem:
        return lead.problem
    try:
        normalize.normalize_lead(**lead.normalize_kwargs())
    except normalize.InvalidLead as exc:
        return exc.reason
    return None


def _quote(job: UploadJob, owner: str) -> None:
    now = timezone.now()
    policy = job_policy(job)
    leads = list(_leads(job))
    if not leads:
        raise IntakeError("the file has a header but no data rows")
    _mine(job, owner)
    refused, reasons = [], Counter()
    for position, lead in enumerate(leads):
        problem = _problem(lead)
        if problem is None:
            continue
        reasons[problem] += 1
        if len(refused) < REFUSED_SHOWN:
            refused.append({"row": lead.row_number or position + 1, "lead_id": lead.lead_id or derive_lead_id(lead),
                            "reason": problem})
    _mine(job, owner)
    numbers = admission.quote(leads, policy=policy, now=now)
    decision = admission.admit(lambda: admission.lead_signatures(leads), policy=policy, now=now)
    warning = admission.operator_warning(decision.refusal) if decision.refusal is not None else ""
    body = {"quote": numbers, "refused": refused,
            "reasons": [{"reason": r, "rows": n} for r, n in reasons.most_common(REASONS_SHOWN)],
            "reasons_more": max(0, len(reasons) - REASONS_SHOWN), "warning": warning,
            "quoted_at": now.isoformat()}
    _mine(job, owner, state=UploadState.QUOTED, quote_json=json.dumps(body), rows_total=numbers["rows"],
          rows_invalid=numbers["invalid"], warning=warning)
    UploadJob.objects.filter(pk=job.pk, owner=owner).update(lease_until=None, owner="")
    log.info("upload job %s quoted: %d rows, %d refused, %d billable", job.pk, numbers["rows"], numbers["invalid"],
             numbers["billable"])


def _with_retries(step, *args):
    """Run one short transaction, retrying a locked / busy database with backoff."""
    for attempt in range(DB_RETRIES):
        try:
            return step(*args)
        except DatabaseError as exc:
            if attempt == DB_RETRIES - 1 or "lock" not in str(exc).lower():
                raise
            time.sleep(0.2 * 2 ** attempt)
    return None


def _created_fields(job: UploadJob) -> dict:
    """Who created the run, when ``Run`` records it (``created_by`` / ``created_via``)."""
    names = {f.name for f in Run._meta.get_fields()}
    fields = {}
    if "created_by" in names:
        fields["created_by_id"] = job.created_by_id
    if "created_via" in names:
        fields["created_via"] = "console"
    return fields


def _run_create(job: UploadJob, owner: str, now: dt.datetime) -> None:
    with transaction.atomic():
        run = Run.objects.create(
            run_id=new_run_id(), source_label=job.label or job.file_name, created_at=now,
            policy_force=job.policy_force, policy_fallback=job.policy_fallback,
            policy_retry_sanitized=job.policy_retry_sanitized, **_created_fields(job),
        )
        _mine(job, owner, now, state=UploadState.PARSING, run=run, rows_done=0, rows_invalid=0)
    job.state, job.run, job.rows_done, job.rows_invalid = UploadState.PARSING, run, 0, 0


def _audit(job: UploadJob, run: Run) -> None:
    """Who created the run, in the audit trail (``AuditEvent``, when the project has it) and in the
    admin's own log ("Recent actions"), once: called after the job's conditional move to ``done``."""
    from django.contrib.admin.models import ADDITION, LogEntry

    from skiptrace import models as m

    detail = f"upload “{run.source_label or ''}”: {run.total or 0} leads"
    event = getattr(m, "AuditEvent", None)
    action = getattr(getattr(m, "AuditAction", None), "RUN_CREATED", None)
    if event is not None and action is not None:
        event.record(action, run_id=run.run_id, user=job.created_by, via="console", detail=detail)
    if job.created_by_id:
        LogEntry.objects.log_actions(user_id=job.created_by_id, queryset=[run], action_flag=ADDITION,
                                     change_message=f"Uploaded: {detail}", single_object=True)


def _insert_chunk(job: UploadJob, owner: str, chunk: list[LeadInput], now: dt.datetime) -> None:
    """One chunk in one transaction: its items (held), its leads, the job's ``rows_done``."""
    run = job.run
    start = job.rows_done
    items, rows, invalid = [], {}, 0
    for offset, lead in enumerate(chunk):
        item, row = build_item(lead, run=run, position=start + offset, now=now)
        if row is None:
            invalid += 1
        else:
            item.not_before = HOLD
            rows[row.lead_id] = row  # one lead id twice in a chunk: the later row wins (as run_create)
        items.append(item)
    with transaction.atomic():
        done, failed = start + len(chunk), job.rows_invalid + invalid
        _mine(job, owner, now=timezone.now(), rows_done=done, rows_invalid=failed)  # first: the row lock (PG)
        leads_upsert(list(rows.values()))
        insert_rows(RunItem, items)
        if done > failed:  # counters of a run with no valid item yet stay 0: nothing may think it settled
            Run.objects.filter(run_id=run.run_id).update(total=done, queued=done - failed, failed=failed)
    job.rows_done, job.rows_invalid = done, failed  # committed: the next chunk starts here


def _release_some(run_id: str, now: dt.datetime) -> int:
    with transaction.atomic():
        ids = list(RunItem.objects.filter(run_id=run_id, status=ItemStatus.QUEUED, not_before=HOLD)
                   .order_by("id").values_list("id", flat=True)[:RELEASE_CHUNK])
        if ids:
            RunItem.objects.filter(id__in=ids, not_before=HOLD).update(not_before=None, updated_at=now)
            notify_work()
        return len(ids)


def _finish(job: UploadJob, owner: str, now: dt.datetime) -> None:
    run_id = job.run_id
    with transaction.atomic():
        _mine(job, owner, now)
        this = Run.objects.filter(run_id=run_id)
        this.update(total=job.rows_done, queued=job.rows_done - job.rows_invalid, failed=job.rows_invalid)
        if RunItem.objects.filter(run_id=run_id, status=ItemStatus.QUEUED).exists():
            # finished early by a recount while its rows were still coming in (a resume during the load)
            this.filter(finished_at__isnull=False).update(finished_at=None, report_written_at=None)
        notify_work()
    runs_refresh([run_id], now=now, force=True)
    run = Run.objects.get(run_id=run_id)
    decision = admission.admit(admission.run_signatures(run), policy=job_policy(job), now=now)
    warning = admission.operator_warning(decision.refusal) if decision.refusal is not None else ""
    done_at = timezone.now()
    if not UploadJob.objects.filter(pk=job.pk, owner=owner).update(
        state=UploadState.DONE, warning=warning, lease_until=None, updated_at=done_at, finished_at=done_at,
    ):
        raise LostLease(job.pk)
    try:
        _audit(job, run)
    except DatabaseError:  # the run is queued either way; say so in the log, not as a failed upload
        log.exception("upload job %s: the audit record of run %s could not be written", job.pk, run_id)
    file_delete(job.token)
    log.info("upload job %s done: run %s, %d rows (%d refused) in %.1fs", job.pk, run_id, job.rows_done,
             job.rows_invalid, (done_at - (job.confirmed_at or job.created_at)).total_seconds())


def _load(job: UploadJob, owner: str) -> None:
    """Create the run (once) and insert the file's rows from ``rows_done`` on, then release them."""
    now = timezone.now()
    if job.run_id is None:
        _with_retries(_run_create, job, owner, now)
    else:
        _mine(job, owner, state=UploadState.PARSING)
    job.refresh_from_db()
    leads = itertools.islice(_leads(job), job.rows_done, None)
    for chunk in _chunks(leads, CHUNK):
        _with_retries(_insert_chunk, job, owner, chunk, now)
    if job.rows_done == 0:
        raise IntakeError("the file has a header but no lead rows")
    analyze_after_bulk(RunItem, job.rows_done)  # fresh planner statistics before the workers claim
    while _with_retries(_release_some, job.run_id, timezone.now()):
        _mine(job, owner)
    _with_retries(_finish, job, owner, now)


def _chunks(leads: Iterable[LeadInput], size: int) -> Iterator[list[LeadInput]]:
    it = iter(leads)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def inline(job: UploadJob) -> bool:
    """Is the file small enough to work inside the request?"""
    return job.file_bytes <= INLINE_MAX_BYTES


def job_run_soon(job: UploadJob) -> None:
    """Work the job now in this request (a small file) or in a thread (once the job row commits)."""
    if inline(job):
        job_execute(job.pk)
    else:
        transaction.on_commit(lambda: job_start(job.pk))


def job_confirm_start(job: UploadJob, *, now: dt.datetime | None = None) -> bool:
    """The operator confirmed the quote: queue the job (once) and have it worked."""
    now = now or timezone.now()
    if not UploadJob.objects.filter(pk=job.pk, state=UploadState.QUOTED).update(
        state=UploadState.QUEUED, confirmed_at=now, updated_at=now, owner="", lease_until=None,
    ):
        return False
    job_run_soon(job)
    return True


# --- abandoned jobs and old files ----------------------------------------------------------------------


def _abandoned_q(now: dt.datetime) -> Q:
    return Q(state__in=RUNNABLE_STATES) & (
        Q(lease_until__lt=now) | Q(lease_until__isnull=True, updated_at__lt=now - dt.timedelta(seconds=START_GRACE_S))
    )


def upload_jobs_kick(now: dt.datetime | None = None, *, limit: int = 4) -> int:
    """Start a thread on each abandoned job (its thread died with its process) and sweep old
    quotes. Called by the worker's housekeeping and by the progress page's status poll."""
    now = now or timezone.now()
    uploads_sweep(now)
    ids = list(UploadJob.objects.filter(_abandoned_q(now)).order_by("created_at").values_list("pk", flat=True)[:limit])
    for job_id in ids:
        log.info("upload job %s was abandoned: taking it over", job_id)
        job_start(job_id)
    return len(ids)


def uploads_sweep(now: dt.datetime | None = None) -> int:
    """Expire quotes not confirmed within QUOTE_TTL_S and delete their files, and any stored file
    no live job owns (a crash between storing and recording it). Returns the files deleted."""
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=QUOTE_TTL_S)
    stale = list(UploadJob.objects.filter(state=UploadState.QUOTED, updated_at__lt=cutoff).values_list("pk", "token"))
    for pk, token in stale:
        if UploadJob.objects.filter(pk=pk, state=UploadState.QUOTED).update(
            state=UploadState.EXPIRED, updated_at=now, finished_at=now,
            error="The quote was not confirmed in time; upload the file again.",
        ):
            file_delete(token)
    deleted = len(stale)
    live = set(UploadJob.objects.exclude(state__in=FINAL_STATES).values_list("token", flat=True))
    try:
        entries = list(upload_dir().iterdir())
    except OSError:
        return deleted
    for entry in entries:
        try:
            if entry.stem not in live and entry.stat().st_mtime < cutoff.timestamp():
                entry.unlink(missing_ok=True)
                deleted += 1
        except OSError:
            continue
    return deleted


# --- the views ------------------------------------------------------------------------------------------


def _require_add(request: HttpRequest, model_admin: admin.ModelAdmin) -> None:
    if not model_admin.has_add_permission(request):
        raise PermissionDenied


def _own_job(request: HttpRequest, token: str) -> UploadJob:
    """The user's own job by its token (another user's token is a 404, like an unknown one)."""
    return get_object_or_404(UploadJob.objects.select_related("run"), token=token, created_by=request.user)


def job_url(job: UploadJob) -> str:
    return reverse("admin:skiptrace_run_upload_job", args=[job.token])


def _run_url(run_id: str) -> str:
    return reverse("admin:skiptrace_run_change", args=[url_quote(run_id)])


def _context(request: HttpRequest, model_admin: admin.ModelAdmin, **extra) -> dict:
    return {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, **extra}


def upload_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> HttpResponse:
    """The upload form; a valid file becomes a job being quoted, and the page follows it."""
    _require_add(request, model_admin)
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        data = form.cleaned_data
        policy = Policy(force=data["force"], fallback=data["fallback"], retry_sanitized=data["retry_sanitized"])
        try:
            job = job_create(upload=upload, label=data["label"].strip() or upload.name, policy=policy,
                             user=request.user, session_key=request.session.session_key or "")
        except IntakeError as exc:
            form.add_error("file", f"{exc} — nothing was created.")
        except OSError:
            log.exception("upload could not be stored")
            form.add_error("file", "The file could not be stored on the server (disk full?) — nothing was created.")
        else:
            job_run_soon(job)
            return HttpResponseRedirect(job_url(job))
    elif request.method == "GET":
        try:
            uploads_sweep()
        except (OSError, DatabaseError):
            log.warning("sweeping old uploads failed", exc_info=True)
    context = _context(request, model_admin, title="Upload a lead list", form=form,
                       media=model_admin.media + form.media)
    return TemplateResponse(request, "admin/skiptrace/run/upload.html", context)


def status_payload(job: UploadJob) -> dict:
    total = job.rows_total or 0
    done = job.rows_done if job.state in (UploadState.PARSING, UploadState.DONE) else 0
    return {
        "state": job.state,
        "rows_total": total,
        "rows_done": done,
        "rows_invalid": job.rows_invalid,
        "percent": round(100.0 * done / total, 1) if total else (100.0 if job.state == UploadState.DONE else 0.0),
        "error": job.error or None,
        "run_id": job.run_id,
        "run_url": _run_url(job.run_id) if job.run_id and job.state == UploadState.DONE else None,
        "page_url": job_url(job),
    }


def job_page(request: HttpRequest, model_admin: admin.ModelAdmin, token: str) -> HttpResponse:
    """One page for the whole job: reading → the quote and Confirm → loading → the run page."""
    _require_add(request, model_admin)
    job = _own_job(request, token)
    if job.state == UploadState.DONE and job.run_id:
        _done_messages(request, model_admin, job)
        return HttpResponseRedirect(_run_url(job.run_id))
    body = json.loads(job.quote_json) if job.quote_json else {}
    context = _context(
        request, model_admin, title="Upload a lead list", job=job, quote=body.get("quote"), shown=_shown(body.get("quote")),
        refused=body.get("refused") or [], reasons=body.get("reasons") or [],
        reasons_more=body.get("reasons_more") or 0, refused_more=max(0, job.rows_invalid - len(body.get("refused") or [])),
        warning=body.get("warning") or "", status=status_payload(job), poll_ms=POLL_MS,
        status_url=reverse("admin:skiptrace_run_upload_status", args=[job.token]),
        confirm_url=reverse("admin:skiptrace_run_upload_confirm", args=[job.token]),
        cancel_url=reverse("admin:skiptrace_run_upload_cancel", args=[job.token]),
        upload_url=reverse("admin:skiptrace_run_upload"),
        working=job.state in RUNNABLE_STATES, expires_min=int(QUOTE_TTL_S // 60),
    )
    return TemplateResponse(request, "admin/skiptrace/run/upload_job.html", context)


def _shown(numbers: dict | None) -> dict:
    """The quote's numbers as the page prints them (thousands separated, dollars with cents)."""
    if not numbers:
        return {}
    return {k: (f"${v:,.2f}" if k.endswith("_usd") else f"{v:,}") for k, v in numbers.items()}


def _done_messages(request: HttpRequest, model_admin: admin.ModelAdmin, job: UploadJob) -> None:
    leads = f"{job.rows_done} lead{'' if job.rows_done == 1 else 's'}"
    model_admin.message_user(
        request,
        f"Created run {job.run_id} from “{job.label or job.file_name}”: {leads}, "
        f"{job.rows_invalid} refused at intake. The worker works it; this page follows it.",
        messages.SUCCESS,
    )
    body = json.loads(job.quote_json) if job.quote_json else {}
    shown = body.get("refused") or []
    for row in shown:
        model_admin.message_user(request, f"Row {row['row']} (lead {row['lead_id']}): invalid_input: {row['reason']}",
                                 messages.WARNING)
    if job.rows_invalid > len(shown):
        model_admin.message_user(request, f"… and {job.rows_invalid - len(shown)} more refused rows (listed below).",
                                 messages.WARNING)
    if job.warning:
        model_admin.message_user(request, job.warning, messages.WARNING)


@require_POST
def job_confirm(request: HttpRequest, model_admin: admin.ModelAdmin, token: str) -> HttpResponse:
    _require_add(request, model_admin)
    job = _own_job(request, token)
    if not job_confirm_start(job):
        if job.state not in (UploadState.QUEUED, UploadState.PARSING, UploadState.DONE):  # not a double click
            model_admin.message_user(request, f"Nothing to confirm: this upload is {job.state}.", messages.WARNING)
    return HttpResponseRedirect(job_url(job))


@require_POST
def job_cancel(request: HttpRequest, model_admin: admin.ModelAdmin, token: str) -> HttpResponse:
    _require_add(request, model_admin)
    job = _own_job(request, token)
    now = timezone.now()
    if UploadJob.objects.filter(pk=job.pk, state__in=(UploadState.QUOTING, UploadState.QUOTED)).update(
        state=UploadState.CANCELLED, updated_at=now, finished_at=now, owner="", lease_until=None,
    ):
        file_delete(job.token)
        model_admin.message_user(request, "Upload cancelled; the stored file is deleted and nothing was created.",
                                 messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:skiptrace_run_upload"))
    model_admin.message_user(request, f"Not cancelled: this upload is {job.state}.", messages.WARNING)
    return HttpResponseRedirect(job_url(job))


def job_status(request: HttpRequest, model_admin: admin.ModelAdmin, token: str) -> JsonResponse:
    """The job's progress as JSON (the page polls it); takes over the job if its thread died."""
    if not model_admin.has_add_permission(request):
        return JsonResponse({"error": "PermissionDenied", "detail": "you may not upload runs"}, status=403)
    try:
        job = _own_job(request, token)
    except Http404:
        return JsonResponse({"error": "NotFound", "detail": "no such upload"}, status=404)
    now = timezone.now()
    if UploadJob.objects.filter(pk=job.pk).filter(_abandoned_q(now)).exists():
        job_start(job.pk)  # the claim decides; a thread that loses it just ends
    return JsonResponse(status_payload(job), headers={"Cache-Control": "no-store"})


def upload_urls(model_admin: admin.ModelAdmin) -> list:
    """The upload routes, each behind the admin login (``admin_view``); put first in
    ``RunAdmin.get_urls`` (before the ``<str:run_id>/`` routes)."""
    wrap = model_admin.admin_site.admin_view

    def view(func):
        def wrapper(request, *args, **kwargs):
            return func(request, model_admin, *args, **kwargs)

        return wrap(update_wrapper(wrapper, func))

    return [
        path("upload/", view(upload_view), name="skiptrace_run_upload"),
        path("upload/<str:token>/", view(job_page), name="skiptrace_run_upload_job"),
        path("upload/<str:token>/confirm/", view(job_confirm), name="skiptrace_run_upload_confirm"),
        path("upload/<str:token>/cancel/", view(job_cancel), name="skiptrace_run_upload_cancel"),
        path("upload/<str:token>/status/", view(job_status), name="skiptrace_run_upload_status"),
    ]
