from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from skiptrace.admin_views import ops_index

# A database error raised outside a view (a middleware's session read) is a 503, not a 500 page.
handler500 = "skiptrace.middleware.server_error"

urlpatterns = [
    # The ops console: the admin index with today's spend and the breaker on top, and
    # /admin/contacts/ landing on the lead list (both before the admin's own routes, which they shadow).
    path("admin/", admin.site.admin_view(ops_index), name="ops-index"),
    path("admin/contacts/", RedirectView.as_view(pattern_name="admin:contacts_lead_changelist", query_string=True)),
    path("admin/", admin.site.urls),
    path("api/", include("skiptrace.urls")),  # its last route answers every other /api/ path (JSON 404)
    # The admin's CSS/JS under gunicorn (DEBUG off), from the installed apps' static folders: a
    # handful of ops users do not need a CDN or collectstatic. `insecure` only lifts the DEBUG check.
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
