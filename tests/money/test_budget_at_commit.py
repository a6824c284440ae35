"""PostgreSQL: a reservation far from the cap is checked against the day's budget at its COMMIT
(migration 0106's deferred trigger), under the budget lock; past the cap the COMMIT fails,
nothing of it stays, and the batch is cut to the budget the classic way."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from skiptrace import guards
from skiptrace.models import CallState, GuardState, ItemStatus, ProviderCall, RunItem
from skiptrace.worker import Worker
from tests.money.test_service import create, lead

pytestmark = [pytest.mark.django_db(transaction=True),
              pytest.mark.skipif("connection.vendor != 'postgresql'")]


def _leads(n: int, street: str):
    """``n`` leads of their own (a street a test: the in-process cache outlives a test)."""
    return [lead(f"{street[:2]}{i}", street=f"{200 + i} {street}") for i in range(n)]


def _other_connection() -> psycopg.Connection:
    s = connection.settings_dict
    return psycopg.connect(host=s["HOST"] or "127.0.0.1", port=s["PORT"] or 5432, user=s["USER"] or "postgres",
                           dbname=s["NAME"])


def _one_batch_of_ten(settings, caplog, *, cap_cents: int, street: str):
    """Ten new leads at 7 cents a match under a daily cap, and one batch of them worked."""
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = cap_cents
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    run = create(*_leads(10, street))
    caplog.set_level(logging.INFO, logger="convexa.service")
    assert Worker(concurrency=1, batch_size=10, idle_sleep_s=0).process_one_batch()
    return run


def test_a_reservation_past_the_cap_fails_at_its_commit_and_is_cut_to_the_budget(provider, settings, caplog):
    run = _one_batch_of_ten(settings, caplog, cap_cents=30, street="Juniper Ct")
    # 10 x 7 = 70 > 30: the first reservation was rolled back at its COMMIT, the second cut to 4
    assert "over today's cap at its commit" in caplog.text
    assert len(provider.items) == 4
    assert ProviderCall.objects.count() == 4  # nothing of the rolled-back reservation is left
    assert sorted(RunItem.objects.filter(run=run).values_list("status", flat=True)) == (
        [ItemStatus.DONE] * 4 + [ItemStatus.QUEUED] * 6)
    assert guards.budget_spent_cents_today() == 28
    run.refresh_from_db()
    assert run.state == "paused" and run.reason == "daily_budget"


def test_a_reservation_within_the_cap_commits_at_once(provider, settings, caplog):
    run = _one_batch_of_ten(settings, caplog, cap_cents=70, street="Hazel Row")
    assert "over today's cap" not in caplog.text  # exactly the cap is within it
    assert len(provider.items) == 10 and guards.budget_spent_cents_today() == 70
    run.refresh_from_db()
    assert run.state == "finished"


def test_the_check_at_commit_counts_what_another_worker_committed_while_it_waited(provider, settings):
    """Another worker holds the budget lock and commits 35 cents of calls while this reservation
    (70 cents, alone exactly the cap) waits for the lock at its COMMIT: the check, made after the
    lock, sees them, and the batch is cut to the 35 cents left."""
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 70
    settings.SKIP_TRACE_COST_PER_MATCH_CENTS = 7
    run = create(*_leads(10, "Quince Loop"))
    Worker(concurrency=1, batch_size=10, idle_sleep_s=0).housekeeping(force=True)
    GuardState.objects.get_or_create(name="budget")  # the lock's row (a flush between tests took it)
    other = _other_connection()
    other.execute("SELECT 1 FROM skiptrace_guards WHERE name = 'budget' FOR UPDATE")
    done = threading.Event()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            Worker(concurrency=1, batch_size=10, idle_sleep_s=0).process_one_batch()
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            connection.close()
            done.set()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not _waits_for_a_lock(other) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waits_for_a_lock(other), f"the reservation never waited for the budget lock ({errors or 'no error'})"
        assert provider.items == []  # nothing leaves while the check waits
        day = guards.budget_day(timezone.now())
        for n in range(5):
            other.execute(
                "INSERT INTO provider_calls (provider, idempotency_key, lead_id, request_json, signature, batch_id, "
                "budget_day, estimate_cents, cost_cents, state, generation, created_at, label, api_version, "
                "attempt_reason, worker_id, matched, bill_mismatch) VALUES ('batchdata', %s, 'Z', '{}', %s, 'other', "
                "%s, 7, 0, %s, 0, now(), '', 'v1', 'primary', 'other', false, false)",
                [f"{n}" * 64, f"s{n}" * 32, day, CallState.SENT])
        other.commit()
    finally:
        other.close()
        thread.join(20)
    assert done.is_set()
    assert len(provider.items) == 5  # 35 + 5 x 7 = 70
    assert guards.budget_spent_cents_today() <= 70
    assert RunItem.objects.filter(run=run, status=ItemStatus.QUEUED).count() == 5


def _waits_for_a_lock(other: psycopg.Connection) -> bool:
    with psycopg.connect(other.info.dsn, autocommit=True) as look:
        return bool(look.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()[0])
