"""The database is set up the way the money path relies on."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction

from skiptrace.models import CacheEntry, ProviderCall

pytestmark = pytest.mark.django_db


def _call(**kw) -> ProviderCall:
    base = dict(
        provider="batchdata", idempotency_key="k" * 64, lead_id="A-1", request_json="{}",
        signature="s" * 64, batch_id="b1", budget_day=dt.date(2026, 1, 1),
    )
    base.update(kw)
    return ProviderCall.objects.create(**base)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite pragmas")
def test_sqlite_connection_runs_in_wal_with_busy_timeout_and_normal_sync():
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_provider_calls_unique_index_rejects_second_identical_key():
    _call()
    with pytest.raises(IntegrityError), transaction.atomic():
        _call(lead_id="A-2", batch_id="b2")
    assert ProviderCall.objects.count() == 1
    _call(provider="other")  # the key is unique per provider


def test_cache_unique_index_rejects_second_entry_for_one_key():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    entry = dict(provider="batchdata", idempotency_key="k" * 64, payload_hash="h", response_json="{}",
                 parsed_contacts_json="{}", ttl_expires_at=now, signature="s" * 64)
    CacheEntry.objects.create(**entry)
    with pytest.raises(IntegrityError), transaction.atomic():
        CacheEntry.objects.create(**entry)


def test_spec_tables_and_index_names_exist():
    tables = set(connection.introspection.table_names())
    assert {"provider_calls", "skiptrace_cache", "skiptrace_runs", "skiptrace_run_items"} <= tables
    with connection.cursor() as cursor:
        calls = connection.introspection.get_constraints(cursor, "provider_calls")
        cache = connection.introspection.get_constraints(cursor, "skiptrace_cache")
        items = connection.introspection.get_constraints(cursor, "skiptrace_run_items")
    assert calls["ux_provider_idem"]["unique"] and calls["ux_provider_idem"]["columns"] == ["provider", "idempotency_key"]
    assert cache["ux_cache_key"]["unique"]
    assert "ix_run_items_run" in items
    columns = {c.name for c in connection.introspection.get_table_description(connection.cursor(), "provider_calls")}
    assert {"id", "provider", "idempotency_key", "lead_id", "run_id", "request_json", "response_json",
            "payload_hash", "status_code", "cost_cents", "error_text", "created_at"} <= columns
