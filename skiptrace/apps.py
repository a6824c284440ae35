from django.apps import AppConfig


class SkiptraceConfig(AppConfig):
    name = "skiptrace"
    verbose_name = "Skip-trace"
    default_auto_field = "django.db.models.BigAutoField"
