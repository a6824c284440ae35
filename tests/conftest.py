from __future__ import annotations

import datetime as dt
import json

import pytest
from django.test import Client

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
PROVIDER_TOKEN = "test-provider-token-abcdef0123456789"


@pytest.fixture(autouse=True)
def _product_settings(settings, tmp_path):
    settings.ADMIN_TOKEN = ADMIN_TOKEN
    settings.BATCHDATA_API_TOKEN = PROVIDER_TOKEN
    settings.BATCHDATA_BASE_URL = "http://127.0.0.1:9"  # nothing listens: a test that forgets to mock fails
    settings.RUN_REPORTS_DIR = tmp_path / "run_reports"
    settings.SKIP_TRACE_RPS = 1000.0  # tests that measure the rate limit set their own
    settings.AXES_ENABLED = False  # login throttling has its own tests (tests/api/test_integrations.py)
    from skiptrace import guards, service

    service.L1.clear()
    guards.reset_rate_limiter()
    yield settings
    service.L1.clear()
    guards.reset_rate_limiter()


class ApiClient(Client):
    """A test client that sends the admin bearer token and JSON bodies."""

    def __init__(self, token: str | None = ADMIN_TOKEN, **kwargs):
        super().__init__(**kwargs)
        self.token = token

    def _auth(self, extra):
        if self.token is not None:
            extra.setdefault("HTTP_AUTHORIZATION", f"Bearer {self.token}")
        return extra

    def get(self, path, data=None, **extra):
        return super().get(path, data, **self._auth(extra))

    def post_json(self, path, body, **extra):
        data = body if isinstance(body, str | bytes) else json.dumps(body)
        return super().post(path, data, content_type="application/json", **self._auth(extra))

    def post(self, path, data=None, content_type="application/json", **extra):
        return super().post(path, data, content_type=content_type, **self._auth(extra))


@pytest.fixture
def api_client() -> ApiClient:
    return ApiClient()


@pytest.fixture
def anon_client() -> ApiClient:
    return ApiClient(token=None)


@pytest.fixture
def sandbox(settings):
    """The bundled BatchData simulator on a loopback port, with the product pointed at it."""
    from skiptrace.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(config=SandboxConfig(token=PROVIDER_TOKEN)).start()
    settings.BATCHDATA_BASE_URL = server.url
    yield server
    server.stop()


class FakeClock:
    """An injected clock: tests move time instead of sleeping."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 11, 28, 15, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **kwargs) -> dt.datetime:
        self.now += dt.timedelta(**kwargs)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
