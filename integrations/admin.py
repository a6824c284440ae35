"""The console's view of integrations: API keys (list, revoke), webhook endpoints (edit), deliveries
with their attempts (read-only). Secrets and key hashes are never shown."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from integrations.models import ApiKey, WebhookAttempt, WebhookDelivery, WebhookEndpoint


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "prefix", "created_at", "last_used_at", "revoked_at")
    list_filter = ("scope",)
    search_fields = ("name", "prefix")
    fields = ("name", "scope", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request) -> bool:  # keys are created with `manage.py api_key create`
        return False

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke(self, request, queryset) -> None:
        n = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{n} keys revoked", messages.SUCCESS)


class EndpointForm(forms.ModelForm):
    url = forms.URLField(assume_scheme="https", max_length=500)
    secret = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False,
                             help_text="16+ characters; leave empty to keep the current secret")

    class Meta:
        model = WebhookEndpoint
        fields = ("name", "url", "secret", "events", "active")

    def clean_secret(self) -> str:
        secret = self.cleaned_data.get("secret") or ""
        if not secret:
            if self.instance.pk:
                return self.instance.secret
            raise forms.ValidationError("a new endpoint needs a secret")
        if len(secret) < 16:
            raise forms.ValidationError("use at least 16 characters")
        return secret


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = ("name", "url", "events", "active", "created_at")
    list_filter = ("active",)


class AttemptInline(admin.TabularInline):
    model = WebhookAttempt
    fields = ("at", "status_code", "error", "duration_ms")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "event", "event_id", "endpoint", "state", "attempts", "last_status", "next_attempt_at",
                    "created_at", "delivered_at")
    list_filter = ("state", "event", "endpoint")
    search_fields = ("event_id",)
    fields = ("event", "event_id", "endpoint", "state", "attempts", "last_status", "last_error", "next_attempt_at",
              "created_at", "delivered_at", "body")
    readonly_fields = fields
    inlines = [AttemptInline]
    actions = ["retry_now"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.action(description="Send again now", permissions=["change"])
    def retry_now(self, request, queryset) -> None:
        n = queryset.update(state="pending", next_attempt_at=timezone.now(), lease_until=None)
        self.message_user(request, f"{n} deliveries will be sent within seconds", messages.SUCCESS)
