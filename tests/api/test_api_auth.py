"""/api/* needs the admin bearer token; health is open; errors are JSON."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_health_is_open_and_reports_db_and_provider(anon_client):
    response = anon_client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "db": True, "provider": "ready"}


def test_health_says_not_configured_without_provider_token(anon_client, settings):
    settings.BATCHDATA_API_TOKEN = None
    assert anon_client.get("/api/health").json()["provider"] == "not_configured"


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic dGVzdA==", "Bearer ", "test-admin-token-0123456789abcdef"])
def test_api_without_right_token_is_401_json(anon_client, header):
    extra = {} if header is None else {"HTTP_AUTHORIZATION": header}
    response = anon_client.get("/api/metrics", **extra)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "Unauthorized"


def test_api_closed_when_admin_token_unset(api_client, settings):
    settings.ADMIN_TOKEN = None
    response = api_client.get("/api/metrics")
    assert response.status_code == 401
    assert "ADMIN_TOKEN" in response.json()["detail"]


def test_unknown_api_path_is_404_json(api_client):
    response = api_client.get("/api/nope/nothing")
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"
