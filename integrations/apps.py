from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    """What integrators build on: scoped API keys, idempotent submits and signed webhooks."""

    name = "integrations"
    default_auto_field = "django.db.models.BigAutoField"
