"""The spec's four tables (same table and column names) plus the columns the money invariants need.

- ``provider_calls``: one row per lead per provider HTTP request. Reserved (committed) before the
  request is sent, so after any crash "requests that reached the provider <= rows". The unique
  ``(provider, idempotency_key)`` is the single-flight lock: see ``skiptrace.money``.
- ``skiptrace_cache``: L2 cache, one entry per normalized input (primary or sanitized signature).
- ``skiptrace_runs`` / ``skiptrace_run_items``: the queue and the run lifecycle.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from skiptrace.states import RunQuerySet, run_state, shown_reason


class CallState(models.TextChoices):
    RESERVED = "reserved"
    SENT = "sent"
    COMPLETED = "completed"
    ERRORED = "errored"
    LOST = "lost"  # sent, no answer came back: costed at its estimate, never re-sent by itself
    UNREADABLE = "unreadable"  # a 2xx we could not map: billed like a lost call, body kept for a reparse


OPEN_CALL_STATES = (CallState.RESERVED, CallState.SENT)
# Sent and billed, but the answer is unknown: the lead is not sent again without a resume or force.
UNKNOWN_OUTCOME_STATES = (CallState.LOST, CallState.UNREADABLE)


class ItemStatus(models.TextChoices):
    QUEUED = "queued"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"


class AttemptReason(models.TextChoices):
    PRIMARY = "primary"
    ADDRESS_SANITIZED = "address_sanitized"


class Run(models.Model):
    run_id = models.CharField(primary_key=True, max_length=64)
    source_label = models.TextField(null=True, blank=True)
    total = models.IntegerField(null=True, default=0)
    queued = models.IntegerField(null=True, default=0)
    in_flight = models.IntegerField(null=True, default=0)
    done = models.IntegerField(null=True, default=0)
    failed = models.IntegerField(null=True, default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    soft_paused = models.BooleanField(default=False)
    reason = models.TextField(null=True, blank=True)
    # --- beyond the spec ---
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    policy_force = models.BooleanField(default=False)
    policy_fallback = models.BooleanField(default=False)
    policy_retry_sanitized = models.BooleanField(default=True)
    override_budget = models.BooleanField(default=False)
    paused_by_operator = models.BooleanField(default=False)
    cache_hits = models.IntegerField(default=0)
    provider_served = models.IntegerField(default=0)  # items whose answer came from a fresh call
    cost_cents = models.IntegerField(default=0)
    report_written_at = models.DateTimeField(null=True, blank=True)
    # when the counters above were last recounted from the items, and what that recount cost
    # (``service.runs_refresh`` spaces recounts of big runs by it)
    counted_at = models.DateTimeField(null=True, blank=True)
    count_ms = models.FloatField(default=0)
    # the run's provider money as of that recount (``selectors.run_money``): what /status shows for a
    # big run, so that polling it costs one row read however many calls the run has
    counted_calls = models.IntegerField(default=0)
    counted_requests = models.IntegerField(default=0)
    counted_in_flight_cents = models.IntegerField(default=0)
    # who created it: the console user (null for the API and the CLI), and through what
    # ("console", "api:<key name>", "cli")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_via = models.CharField(max_length=100, blank=True, default="")

    objects = RunQuerySet.as_manager()

    class Meta:
        db_table = "skiptrace_runs"
        ordering = ["-created_at"]
        permissions = [("override_budget", "Can resume a run past the budget (override)")]

    def __str__(self) -> str:
        return self.run_id

    @property
    def state(self) -> str:
        """``queued`` | ``running`` | ``paused`` | ``finished``: see ``skiptrace.states``."""
        return run_state(finished=self.finished_at is not None, started=self.started_at is not None,
                         operator_paused=self.paused_by_operator, soft_paused=self.soft_paused,
                         override_budget=self.override_budget, reason=self.reason)

    @property
    def shown_reason(self) -> str | None:
        """The reason ``/status`` and the console show (the operator's pause first)."""
        return shown_reason(finished=self.finished_at is not None, operator_paused=self.paused_by_operator,
                            reason=self.reason)


class ProviderCall(models.Model):
    provider = models.CharField(max_length=32)
    idempotency_key = models.CharField(max_length=64)
    lead_id = models.CharField(max_length=64)
    run_id = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    request_json = models.TextField()
    response_json = models.TextField(null=True, blank=True)
    payload_hash = models.CharField(max_length=64, null=True, blank=True)
    status_code = models.IntegerField(null=True, blank=True)
    cost_cents = models.IntegerField(default=0)
    error_text = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # --- beyond the spec ---
    state = models.CharField(max_length=16, choices=CallState.choices, default=CallState.RESERVED)
    signature = models.CharField(max_length=64, db_index=True)
    generation = models.IntegerField(default=0)
    batch_id = models.CharField(max_length=32, db_index=True)
    item_id = models.BigIntegerField(null=True, blank=True)
    estimate_cents = models.IntegerField(default=0)
    budget_day = models.DateField()
    attempt_reason = models.CharField(max_length=32, default=AttemptReason.PRIMARY)
    label = models.CharField(max_length=64, blank=True, default="")
    predecessor = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    matched = models.BooleanField(null=True, blank=True)
    match_count = models.IntegerField(null=True, blank=True)
    parsed_contacts_json = models.TextField(null=True, blank=True)
    provider_request_id = models.CharField(max_length=128, null=True, blank=True)
    # the wire format of the request ("v1" | "v3"), so a stored answer is read again the same way
    api_version = models.CharField(max_length=4, default="v1")
    # this call carries part of a bill above the per-person matches (matchCount was higher)
    bill_mismatch = models.BooleanField(default=False)
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # the worker that reserved and sent it (``Worker.worker_id`` "host:pid:tag", or "api")
    worker_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        db_table = "provider_calls"
        constraints = [
            models.UniqueConstraint(fields=["provider", "idempotency_key"], name="ux_provider_idem"),
        ]
        indexes = [
            models.Index(fields=["state", "lease_until"], name="ix_calls_state_lease"),
            models.Index(fields=["budget_day", "state"], name="ix_calls_budget_day"),
            models.Index(fields=["-created_at"], name="ix_calls_created"),
        ]

    def __str__(self) -> str:
        return f"call {self.pk} ({self.state})"


class CacheEntry(models.Model):
    provider = models.CharField(max_length=32)
    idempotency_key = models.CharField(max_length=64)  # sha256(signature): generation 0's key
    payload_hash = models.CharField(max_length=64)
    response_json = models.TextField()
    parsed_contacts_json = models.TextField()
    ttl_expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(null=True, blank=True)
    # --- beyond the spec ---
    signature = models.CharField(max_length=64)
    provider_call = models.ForeignKey(ProviderCall, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        db_table = "skiptrace_cache"
        constraints = [
            models.UniqueConstraint(fields=["provider", "idempotency_key"], name="ux_cache_key"),
        ]
        verbose_name_plural = "cache entries"

    def __str__(self) -> str:
        return f"cache entry {self.pk}"  # the id its list, its title and the call's link show


class RunItem(models.Model):
    # indexed by ix_run_items_run and ix_run_items_queue, not by Django's own FK index (and its LIKE twin)
    run = models.ForeignKey(Run, db_column="run_id", on_delete=models.CASCADE, related_name="items", db_index=False)
    lead_id = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=ItemStatus.choices, default=ItemStatus.QUEUED)
    attempt = models.IntegerField(default=0)
    idem_key = models.CharField(max_length=64)
    normalized_address = models.TextField(null=True, blank=True)
    normalized_person = models.TextField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    # --- beyond the spec ---
    position = models.IntegerField(default=0)
    signature = models.CharField(max_length=64, blank=True, default="")
    sanitized_signature = models.CharField(max_length=64, blank=True, default="")
    has_unit = models.BooleanField(default=False)
    # the normalized request fields sent to the provider
    street = models.TextField(blank=True, default="")
    street_sanitized = models.TextField(blank=True, default="")
    city = models.TextField(blank=True, default="")
    state = models.CharField(max_length=8, blank=True, default="")
    zip = models.CharField(max_length=10, blank=True, default="")
    first = models.TextField(blank=True, default="")
    last = models.TextField(blank=True, default="")
    # what ops saw in the file, for the dialer CSV
    address_display = models.TextField(blank=True, default="")
    owner_display = models.TextField(blank=True, default="")
    attempt_reason = models.CharField(max_length=32, default=AttemptReason.PRIMARY)
    lease_until = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    resend_allowed = models.BooleanField(default=False)  # set by an explicit resume of a lost call
    cached = models.BooleanField(default=False)
    stale = models.BooleanField(default=False)
    provider_call = models.ForeignKey(
        ProviderCall, null=True, blank=True, on_delete=models.SET_NULL, related_name="served_items"
    )
    # the first call of a sanitized retry ("sanitized_retry_predecessor" in reports)
    predecessor_call = models.ForeignKey(
        ProviderCall, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(default=timezone.now)
    # the worker holding (or that last held) its claim
    worker_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        db_table = "skiptrace_run_items"
        indexes = [
            # A run's queue in claim order (oldest first by id) and its counts by status: one index
            # where three did overlapping work on every write (each non-HOT update of an item
            # writes every index of the table).
            models.Index(fields=["run"], name="ix_run_items_run"),  # the spec's schema names it
            models.Index(fields=["run", "status", "id"], name="ix_run_items_queue"),
            models.Index(fields=["status", "not_before"], name="ix_run_items_claim"),
            models.Index(fields=["lead_id"], name="ix_run_items_lead"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=["queued", "in_flight", "done", "failed"]),
                name="ck_run_items_status",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.lead_id}"

    @property
    def active_signature(self) -> str:
        """The signature this attempt asks about: the sanitized one on the retry without units."""
        return self.sanitized_signature if self.attempt_reason == AttemptReason.ADDRESS_SANITIZED else self.signature


class BudgetDelta(models.Model):
    """PostgreSQL: what each statement on ``provider_calls`` changed in its budget day's spend
    (settled cost + open estimates), written by the database's own trigger
    (``convexa_budget_delta``, migration 0103), so no code path can miss it. A day's spend is the
    sum of its rows: a few per provider batch, folded into one by the workers' housekeeping
    (``guards.budget.budget_deltas_fold``), where ``SUM`` over the day's calls read every call of
    the day under the budget lock (100,000 rows by the end of a 100,000-lead day). SQLite keeps
    the aggregate over the calls (one host, no fleet to hold up)."""

    budget_day = models.DateField()
    cents = models.BigIntegerField()

    class Meta:
        db_table = "skiptrace_budget_deltas"
        indexes = [models.Index(fields=["budget_day"], name="ix_budget_deltas_day")]

    def __str__(self) -> str:
        return f"{self.budget_day}: {self.cents:+d}"


class InFlightBatch(models.Model):
    """PostgreSQL: the provider requests in flight fleet-wide, one row per batch, for the
    concurrency slot (``guards.slots``). A row is written with the move of its batch's calls to
    ``sent`` (the same statement) and removed by the database's own trigger
    (``convexa_in_flight_release``, migration 0104) when the last of them leaves ``sent``, so no
    code path can miss it; a row past its lease no longer counts (a dead worker's request) and the
    reaper deletes it. Counting ``sent`` calls instead walked every dead index entry of every call
    that was ever sent until autovacuum came by: 90 ms under the slot lock at 67,000 calls, which
    capped a 100,000-lead run near 11 requests a second. SQLite counts the calls (no dead entries)."""

    batch_id = models.CharField(max_length=32, primary_key=True)
    lease_until = models.DateTimeField()

    class Meta:
        db_table = "skiptrace_in_flight"

    def __str__(self) -> str:
        return f"in flight {self.batch_id}"


class GuardState(models.Model):
    """Fleet-wide guard rows (one per name): the circuit breaker and the budget-day mutex.

    Shared state lives in the database because it is the one thing every worker on every host
    already shares; a row lock on ``name='budget'`` serializes budget reservations on PostgreSQL
    (SQLite serializes every write transaction anyway).
    """

    name = models.CharField(primary_key=True, max_length=32)
    state = models.CharField(max_length=16, default="closed")
    opened_at = models.DateTimeField(null=True, blank=True)
    next_probe_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "skiptrace_guards"

    def __str__(self) -> str:
        return f"{self.name}: {self.state}"


class BreakerSample(models.Model):
    """The circuit breaker's sliding window: one row per finished provider HTTP request, only the
    last CIRCUIT_MIN_SAMPLES kept."""

    failure = models.BooleanField()
    at = models.DateTimeField()

    class Meta:
        db_table = "skiptrace_breaker_samples"

    def __str__(self) -> str:
        return f"{'failure' if self.failure else 'success'} at {self.at:%H:%M:%S}"


class BudgetSetting(models.Model):
    """The budget caps every worker reads (one row, ``pk=1``; ``guards.budget_caps``).

    No row: the environment gives the first value (``SKIP_TRACE_DAILY_BUDGET_USD``, no per-run cap).
    Changed in the console by whoever has ``skiptrace.change_budgetsetting``; every change is an
    ``AuditEvent`` (and an admin log entry) with the old and the new value.
    """

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    daily_cap_cents = models.PositiveIntegerField(help_text="The most all runs together may spend per budget day.")
    run_cap_cents = models.PositiveIntegerField(null=True, blank=True,
                                                help_text="The most one run may spend in all; empty: no per-run cap.")
    updated_at = models.DateTimeField(default=timezone.now)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        db_table = "skiptrace_budget_settings"
        verbose_name = "budget setting"
        verbose_name_plural = "budget settings"

    def __str__(self) -> str:
        return "Budget caps"


class AuditAction(models.TextChoices):
    RUN_CREATED = "run_created", "created the run"
    RUN_PAUSED = "run_paused", "paused"
    RUN_RESUMED = "run_resumed", "resumed"
    BUDGET_OVERRIDE = "budget_override", "resumed past the budget (override)"
    CAP_CHANGED = "cap_changed", "changed the budget caps"


class AuditEvent(models.Model):
    """Who did what to the money, and when: run creation, pause, resume, budget override, cap change.

    ``actor`` is the console user (null for an API key or the CLI); ``actor_label`` names the actor
    either way ("alice", "api:crm", "cli"). ``detail`` never holds a phone, email or token.
    """

    at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=32, choices=AuditAction.choices)
    run_id = models.CharField(max_length=64, null=True, blank=True, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_label = models.CharField(max_length=150, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    class Meta:
        db_table = "skiptrace_audit_events"
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["run_id", "at"], name="ix_audit_run_at")]

    def __str__(self) -> str:
        return f"{self.actor_label or '?'} {self.get_action_display()} at {self.at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(cls, action: str, *, run_id: str | None = None, user=None, via: str = "", detail: str = "",
               at=None) -> AuditEvent:
        """Write one event. ``user`` (a console user) or ``via`` ("api:<key>", "cli") names the actor."""
        if user is not None and not getattr(user, "is_authenticated", False):
            user = None
        label = user.get_username() if user is not None else (via or "system")
        if user is not None and via and via != "console":
            label = f"{label} ({via})"
        return cls.objects.create(action=action, run_id=run_id, actor=user, actor_label=label[:150],
                                  detail=detail, at=at or timezone.now())
from skiptrace.upload_models import UploadJob  # noqa: F401,E402  (helper B: temporary, the lead wires it)
