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


def _lead_rows(ids, *, last: str, now):
    from contacts.models import Lead
    from skiptrace.bulk import row_factory

    make = row_factory(Lead)
    return [make(lead_id=i, first_name="Pat", last_name=last, street="1 Oak St", city="Tampa", state="FL",
                 zip="33610", created_at=now, updated_at=now) for i in ids]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's indexes")
def test_postgresql_money_path_tables_have_no_pattern_ops_indexes():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = ANY(%s) AND indexdef LIKE %s",
            [["provider_calls", "leads", "lead_phones", "lead_emails", "skiptrace_in_flight"], "%varchar_pattern_ops%"],
        )
        assert cursor.fetchall() == []  # written on every batch, read by no LIKE
        cursor.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'provider_calls'")
        assert cursor.fetchone()[0] == 9


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner statistics")
@pytest.mark.django_db(transaction=True)
def test_housekeeping_gives_the_planner_statistics_of_a_grown_calls_table_when_autovacuum_has_not():
    from skiptrace.bulk import statistics_refresh
    from skiptrace.worker import Worker

    def estimate() -> float:  # the planner's rows for one signature
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) SELECT id FROM provider_calls WHERE signature = %s", ["s" * 64])
            return cursor.fetchone()[0][0]["Plan"]["Plan Rows"]

    def known_rows() -> float:  # the table's size as the planner's statistics have it
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = 'provider_calls'")
            return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_proc WHERE proname = 'pg_stat_force_next_flush'")
        if cursor.fetchone() is None:
            pytest.skip("needs PostgreSQL 15's pg_stat_force_next_flush")
        cursor.execute("ANALYZE provider_calls")  # the statistics of an empty table
    assert known_rows() <= 0
    rows = [ProviderCall(provider="batchdata", idempotency_key=f"{n:064d}", lead_id=f"L-{n}", request_json="{}",
                         signature=f"{n:064x}", batch_id=f"b{n // 100}", budget_day=dt.date(2026, 1, 1))
            for n in range(20_000)]
    ProviderCall.objects.bulk_create(rows)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")  # the inserts reach the statistics counters
    Worker(concurrency=1).housekeeping(force=True)
    assert known_rows() >= 19_000  # analyzed: the planner knows the table grew ...
    assert estimate() <= 2  # ... and that a signature is (nearly) unique
    assert statistics_refresh() == []  # fresh now: nothing to do until the table changes again


def test_a_big_upsert_matches_row_by_row_semantics_on_either_database():
    """On PostgreSQL a big upsert goes through COPY into a staging table; the outcome must be what
    row-by-row ON CONFLICT gives: new rows inserted, existing ones updated, the later of two wins."""
    from contacts.models import Lead
    from contacts.services import leads_upsert

    now = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
    with transaction.atomic():
        leads_upsert(_lead_rows([f"L{n}" for n in range(300)], last="First", now=now))
    assert Lead.objects.count() == 300
    assert Lead.objects.get(lead_id="L5").created_at == now
    rows = _lead_rows([f"L{n}" for n in range(150, 450)], last="Second", now=now)
    rows += _lead_rows(["L7"], last="Later", now=now)  # L7 twice in one upsert: the later row wins
    rows = _lead_rows(["L7"], last="Earlier", now=now) + rows
    leads_upsert(rows)  # outside a transaction too
    names = dict(Lead.objects.values_list("lead_id", "last_name"))
    assert len(names) == 450
    assert names["L0"] == "First" and names["L149"] == "First"
    assert names["L150"] == "Second" and names["L449"] == "Second"
    assert names["L7"] == "Later"


def test_a_big_plain_insert_keeps_every_value_on_either_database():
    from contacts.models import Lead, Phone
    from skiptrace.bulk import insert_rows, row_factory

    Lead.objects.create(lead_id="L1")
    make = row_factory(Phone)
    phones = [make(lead_id="L1", number=f"+1813555{n:04d}", type="Mobile", is_dnc=n % 2 == 0, is_tcpa=False,
                   confidence=None if n % 3 else n, position=n) for n in range(500)]
    insert_rows(Phone, phones)
    saved = list(Phone.objects.filter(lead_id="L1").order_by("position"))
    assert len(saved) == 500
    assert (saved[3].number, saved[3].is_dnc, saved[3].confidence) == ("+18135550003", False, 3)
    assert (saved[4].is_dnc, saved[4].confidence) == (True, None)
