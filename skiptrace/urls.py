from django.urls import path

from skiptrace import views

urlpatterns = [
    path("health", views.health, name="api-health"),
]
