"""Scoped API keys, idempotency records, webhook endpoints and their deliveries."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    READ = "read"  # GET routes
    WRITE = "write"  # also create, pause and resume runs, single-lead calls
    ADMIN = "admin"  # also override the budget


SCOPE_RANK = {Scope.READ: 0, Scope.WRITE: 1, Scope.ADMIN: 2}


class ApiKey(models.Model):
    """An integration's credential. Only a SHA-256 of the key is stored; the key is shown once."""

    name = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)  # the key's first characters, to recognise it in a list
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "api_keys"
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.scope})"


class IdempotencyRecord(models.Model):
    """The first answer to a POST sent with an ``Idempotency-Key``, replayed to its repeats for 24 h."""

    principal = models.CharField(max_length=80)  # whose key: "admin-token" or "key:<name>"
    route = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    body_hash = models.CharField(max_length=64)
    status_code = models.IntegerField(null=True, blank=True)  # None while the first request is at work
    response_body = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "idempotency_records"
        constraints = [models.UniqueConstraint(fields=["principal", "route", "key"], name="ux_idempotency")]
        indexes = [models.Index(fields=["created_at"], name="ix_idempotency_created")]

    def __str__(self) -> str:
        return f"{self.route} {self.key[:16]}"


class WebhookEndpoint(models.Model):
    """Where events are sent. ``WEBHOOK_URL``/``WEBHOOK_SECRET`` is one more, kept as the row named ``env``."""

    name = models.CharField(max_length=64, unique=True)
    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    events = models.CharField(max_length=200, blank=True, default="",
                              help_text="comma-separated event names; empty = every event")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhook_endpoints"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def wants(self, event: str) -> bool:
        names = {e.strip() for e in self.events.split(",") if e.strip()}
        return not names or event in names


class DeliveryState(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # no 2xx within WEBHOOK_RETRY_HOURS


class WebhookDelivery(models.Model):
    """One event for one endpoint; retried with exponential backoff until a 2xx or for 24 h."""

    event_id = models.CharField(max_length=40)
    event = models.CharField(max_length=32)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    body = models.TextField()  # the exact JSON that is signed and sent
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_status = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_deliveries"
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["event_id", "endpoint"], name="ux_delivery_event_endpoint")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="ix_delivery_due")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event} -> {self.endpoint_id} ({self.state})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows")
    at = models.DateTimeField(default=timezone.now)
    status_code = models.IntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.IntegerField(default=0)

    class Meta:
        db_table = "webhook_attempts"
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"attempt {self.pk} ({self.status_code or self.error[:20]})"


class RunEventState(models.Model):
    """The last state of a run that events were sent for, so each transition is announced once."""

    run_id = models.CharField(primary_key=True, max_length=64)
    state = models.CharField(max_length=16)
    reason = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "webhook_run_states"

    def __str__(self) -> str:
        return f"{self.run_id}: {self.state}"
