from django.apps import AppConfig


class DevtoolsConfig(AppConfig):
    """Development tools: the BatchData sandbox and its ``manage.py batchdata_sandbox``. No models."""

    name = "devtools"
    verbose_name = "Development tools"
