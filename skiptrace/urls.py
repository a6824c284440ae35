from django.urls import path

from contacts import views as contact_views
from skiptrace import openapi, views

urlpatterns = [
    path("health", views.health, name="api-health"),
    path("openapi.json", openapi.openapi_json, name="api-openapi"),
    path("metrics", views.metrics, name="api-metrics"),
    path("skiptrace", views.skiptrace_one, name="api-skiptrace"),
    path("skiptrace-runs", views.runs_collection, name="api-runs-create"),
    path("skiptrace-runs/<str:run_id>/status", views.run_status, name="api-run-status"),
    path("skiptrace-runs/<str:run_id>/resume", views.run_resume, name="api-run-resume"),
    path("skiptrace-runs/<str:run_id>/pause", views.run_pause, name="api-run-pause"),
    path("skiptrace-runs/<str:run_id>/report", views.run_report, name="api-run-report"),
    path("skiptrace-runs/<str:run_id>/artifacts", views.run_artifacts, name="api-run-artifacts"),
    path("artifacts/<str:run_id>/<str:name>", views.artifact_download, name="api-artifact-download"),
    # <path:>: a lead id from a CSV may hold "/" ("A/1"); sent as %2F it still reaches its lead
    path("leads/<path:lead_id>/contacts", contact_views.lead_contacts, name="api-lead-contacts"),
    path("exports/contacts.csv", contact_views.contacts_export, name="api-contacts-export"),
    path("debug/skiptrace-latest", views.debug_latest, name="api-debug-latest"),
    # last: anything else under /api/ is a JSON 404 (never Django's HTML page)
    path("<path:rest>", views.api_not_found),
]
