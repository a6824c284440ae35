from django.apps import AppConfig


def _write_artifacts(run_id: str) -> None:
    from skiptrace import reports
    from skiptrace.models import Run

    run = Run.objects.filter(run_id=run_id).first()
    if run is not None:
        reports.write_run_artifacts(run)


class SkiptraceConfig(AppConfig):
    name = "skiptrace"
    verbose_name = "Skip-trace"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from skiptrace import money

        # The console is Convexa's ops site: its own name, and no "View site" link to a site that
        # does not exist (it was a 404).
        admin.site.site_header = "Convexa ops console"
        admin.site.site_title = "Convexa ops"
        admin.site.index_title = "Runs, contacts and the money trail"
        admin.site.site_url = None

        # The worker that settles a run's last item writes report.json and enriched.csv at once.
        money.on_run_finished(_write_artifacts)
