"""A database that refuses connections, has none left or is locked answers 503 with Retry-After:
JSON under /api/, a short page in the console; never a 500 or a traceback."""

from __future__ import annotations

import sqlite3
import time

import pytest
from django.db import OperationalError, connection

from skiptrace import runs
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db


def _refuse(*args, **kwargs):
    raise OperationalError('connection failed: FATAL:  sorry, too many clients already')


def test_an_api_read_while_the_database_refuses_is_a_503_with_retry_after(api_client, monkeypatch):
    monkeypatch.setattr(runs, "run_status", _refuse)
    monkeypatch.setattr("skiptrace.views._run_or_404", lambda run_id: object())
    response = api_client.get("/api/skiptrace-runs/run_x/status")
    body = assert_error(response, 503, "DatabaseUnavailable")
    assert int(response["Retry-After"]) > 0 and body["retry_after"] == int(response["Retry-After"])
    assert "too many clients" not in response.content.decode()  # the server's message stays in the log


def test_a_submit_while_the_database_refuses_is_a_503_and_creates_nothing(api_client, monkeypatch):
    from skiptrace.models import Run

    monkeypatch.setattr("skiptrace.runs.run_create", _refuse)
    lead = {"lead_id": "U-1", "first_name": "Ann", "last_name": "Lee", "street": "1 Main St", "city": "Austin",
            "state": "TX", "zip": "78701"}
    response = api_client.post_json("/api/skiptrace-runs", {"leads": [lead]})
    assert_error(response, 503, "DatabaseUnavailable")
    assert response.has_header("Retry-After")
    assert not Run.objects.exists()


def test_a_console_page_whose_session_cannot_be_read_is_a_503_page_not_a_500(client, admin_user, monkeypatch):
    client.force_login(admin_user)
    monkeypatch.setattr("django.contrib.sessions.backends.db.SessionStore.load", _refuse)
    client.raise_request_exception = False
    response = client.get("/admin/skiptrace/run/")
    assert response.status_code == 503 and response.has_header("Retry-After")
    assert b"Traceback" not in response.content and b"busy" in response.content


@pytest.mark.django_db(transaction=True)
def test_a_locked_sqlite_file_is_a_503_with_retry_after(api_client, settings):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's file lock")
    holder = sqlite3.connect(settings.DATABASES["default"]["NAME"], timeout=1, isolation_level=None)
    connection.close()
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process writing for longer than the busy timeout
        connection.ensure_connection()
        connection.connection.execute("PRAGMA busy_timeout=200")
        lead = {"lead_id": "U-1", "first_name": "Ann", "last_name": "Lee", "street": "1 Main St", "city": "Austin",
            "state": "TX", "zip": "78701"}
        started = time.monotonic()
        response = api_client.post_json("/api/skiptrace-runs", {"leads": [lead]})
        assert time.monotonic() - started < 30
        assert_error(response, 503, "DatabaseUnavailable")
        assert response.has_header("Retry-After")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        connection.close()
