from django.contrib import admin
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from skiptrace.api import error


@csrf_exempt
def api_not_found(request, rest=""):  # noqa: ANN001 - Django view signature
    return error("NotFound", 404, f"no such route: {request.path}")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("skiptrace.urls")),
    path("api/<path:rest>", api_not_found),
]
