"""``UploadJob``: a console upload from the stored file to a created run, one row per upload.

The states, in order (``skiptrace.uploads`` moves a job through them):

- ``quoting``: the file is stored (``DATA_DIR/uploads/<token>.csv``, 0600); a background thread reads
  it and prices it (``admission.quote``);
- ``quoted``: the quote is shown; nothing is created until the operator confirms;
- ``queued``: confirmed, waiting for a thread to take it;
- ``parsing``: the run exists and its items go in, one short transaction per chunk (``rows_done``);
- ``done``: every row is in, the run is released to the workers; the file is deleted;
- ``failed`` (``error`` says why; nothing of a failed quote exists), ``expired`` (a quote never
  confirmed in time) and ``cancelled``: the file is deleted.

A thread owns a job through ``owner`` and ``lease_until`` (renewed with every chunk): when the web
process that ran it died, whoever sees the lease expired (the progress page's status poll, the
worker's housekeeping) takes the job over and goes on from ``rows_done``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class UploadState(models.TextChoices):
    QUOTING = "quoting"
    QUOTED = "quoted"
    QUEUED = "queued"
    PARSING = "parsing"
    DONE = "done"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# States in which a thread has work to do (a job in one of them with an expired lease is abandoned).
RUNNABLE_STATES = (UploadState.QUOTING, UploadState.QUEUED, UploadState.PARSING)
FINAL_STATES = (UploadState.DONE, UploadState.FAILED, UploadState.EXPIRED, UploadState.CANCELLED)


class UploadJob(models.Model):
    token = models.CharField(max_length=64, unique=True)  # random; the stored file's name and the URLs'
    state = models.CharField(max_length=16, choices=UploadState.choices, default=UploadState.QUOTING)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    session_key = models.CharField(max_length=64, blank=True, default="")
    file_name = models.CharField(max_length=255, blank=True, default="")
    file_bytes = models.BigIntegerField(default=0)
    label = models.TextField(blank=True, default="")
    policy_force = models.BooleanField(default=False)
    policy_fallback = models.BooleanField(default=False)
    policy_retry_sanitized = models.BooleanField(default=True)
    quote_json = models.TextField(blank=True, default="")  # the quote and the first refused rows, as shown
    rows_total = models.IntegerField(default=0)
    rows_done = models.IntegerField(default=0)
    rows_invalid = models.IntegerField(default=0)
    error = models.TextField(blank=True, default="")
    warning = models.TextField(blank=True, default="")  # e.g. today's budget is spent: the run waits
    run = models.ForeignKey("skiptrace.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    owner = models.CharField(max_length=96, blank=True, default="")  # the thread working it ("host:pid:thread")
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "skiptrace"
        db_table = "skiptrace_upload_jobs"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "lease_until"], name="ix_upload_jobs_state_lease")]

    def __str__(self) -> str:
        return f"upload {self.pk} ({self.state})"
