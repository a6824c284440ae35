from __future__ import annotations

import csv
import itertools
import json
import os
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from skiptrace import guards, reports
from skiptrace.dialer import DIALER_HEADER
from skiptrace.models import ProviderCall, Run, RunItem
from skiptrace.reports import artifact_paths, iter_run_dialer_rows, run_report, write_run_artifacts

pytestmark = pytest.mark.django_db

# The seed's report schema ("Report JSON schema", Epic B), as given.
SEED_SCHEMA = {
    "run_id": "string",
    "source_label": "string",
    "started_at": "ISO",
    "finished_at": "ISO",
    "duration_s": 0,
    "totals": {"total": 0, "done": 0, "failed": 0, "cached_hits": 0, "provider_calls": 0, "cost_usd": 0},
    "hit_rate": {"phone_any_pct": 0, "email_any_pct": 0},
    "cache_hit_ratio": 0,
    "budgets": {"daily_cap_usd": 0, "spent_usd": 0, "soft_paused": False},
    "errors": [{"reason": "string", "count": 0, "samples": ["lead_id"]}],
    "samples": {
        "enriched": [{"lead_id": "...", "phones": ["..."], "emails": ["..."]}],
        "failed": [{"lead_id": "...", "last_error": "..."}],
    },
}

# ------------------------------------------------------------------------------------------------
# factories

_seq = itertools.count(1)


def today() -> date:
    return timezone.now().date()  # SKIP_TRACE_BUDGET_TZ is UTC in tests


def contacts(phones=(), emails=()):
    return {
        "phones": [
            {"number": n, "type": t, "isDoNotCall": dnc, "isTcpa": False, "confidence": c}
            for n, t, dnc, c in phones
        ],
        "emails": [{"address": a, "isPrimary": i == 0, "confidence": None} for i, a in enumerate(emails)],
        "matched": bool(phones or emails),
        "litigator": False,
    }


FULL = contacts([("+18135550142", "Mobile", False, 90)], ["ann@example.com"])
PHONE_ONLY = contacts([("+18135550143", "Land Line", False, 50)])
EMPTY = contacts()


def make_run(run_id: str = "run-1", **fields) -> Run:
    fields.setdefault("source_label", "cohort-609")
    return Run.objects.create(run_id=run_id, **fields)


def make_call(
    run_id: str | None, *, lead_id: str = "L", contacts_=None, cost_cents: int = 7, **fields
) -> ProviderCall:
    n = next(_seq)
    fields.setdefault("state", "completed")
    fields.setdefault("batch_id", "batch-1")
    fields.setdefault("budget_day", today())
    fields.setdefault("estimate_cents", 7)
    if fields["state"] == "completed":
        fields.setdefault("finished_at", timezone.now())  # the answer's time: its phones' DNC time
    return ProviderCall.objects.create(
        provider="batchdata",
        idempotency_key=f"key-{n}",
        signature=f"sig-{n}",
        lead_id=lead_id,
        run_id=run_id,
        request_json="{}",
        cost_cents=cost_cents,
        parsed_contacts_json=None if contacts_ is None else json.dumps(contacts_),
        **fields,
    )


def item_fields(run: Run, lead_id: str, *, status: str = "done", call=None, position=None, **fields) -> dict:
    fields.setdefault("address_display", f"{lead_id} Main St, Tampa, FL 33610")
    fields.setdefault("owner_display", f"Owner {lead_id}")
    return dict(
        run=run,
        lead_id=lead_id,
        status=status,
        idem_key=f"idem-{lead_id}",
        provider_call=call,
        position=next(_seq) if position is None else position,
        **fields,
    )


def make_item(run: Run, lead_id: str, **kw) -> RunItem:
    return RunItem.objects.create(**item_fields(run, lead_id, **kw))


def make_mixed_run() -> Run:
    """2 fresh done, 1 done from cache (another run's call), 1 sanitized retry, 2 failed (one lost call)."""
    t0 = datetime(2025, 9, 18, 12, 0, 0, tzinfo=UTC)
    run = make_run(started_at=t0, finished_at=t0 + timedelta(seconds=42.5), soft_paused=True)
    make_item(run, "L1", call=make_call(run.run_id, lead_id="L1", contacts_=FULL), position=1)
    make_item(run, "L2", call=make_call(run.run_id, lead_id="L2", contacts_=PHONE_ONLY), position=2)
    other_runs_call = make_call("run-0", lead_id="L3", contacts_=FULL)
    make_item(run, "L3", call=other_runs_call, cached=True, position=3)
    pred = make_call(
        run.run_id, lead_id="L4", contacts_=EMPTY, label="sanitized_retry_predecessor", batch_id="batch-2"
    )
    final = make_call(
        run.run_id,
        lead_id="L4",
        contacts_=contacts([], ["unit@example.com"]),
        attempt_reason="address_sanitized",
        predecessor=pred,
        batch_id="batch-3",
    )
    make_item(run, "L4", call=final, predecessor_call=pred, attempt_reason="address_sanitized", position=4)
    make_item(run, "L5", status="failed", last_error="invalid_input: missing street", position=5)
    lost = make_call(run.run_id, lead_id="L6", state="lost", batch_id="batch-3")
    make_item(
        run,
        "L6",
        status="failed",
        call=lost,
        last_error="provider_outcome_unknown: timeout after send",
        position=6,
    )
    return run


# ------------------------------------------------------------------------------------------------
# schema


def assert_matches_schema(value, schema, path="report"):
    if isinstance(schema, dict):
        assert isinstance(value, dict), path
        for key, sub in schema.items():
            assert key in value, f"{path}.{key} missing"
            assert_matches_schema(value[key], sub, f"{path}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), path
        for i, element in enumerate(value):
            assert_matches_schema(element, schema[0], f"{path}[{i}]")
    elif isinstance(schema, bool):
        assert isinstance(value, bool), path
    elif isinstance(schema, int):
        assert isinstance(value, int | float) and not isinstance(value, bool), path
    elif schema == "ISO":
        assert value is None or datetime.fromisoformat(value).tzinfo is not None, path
    else:
        assert isinstance(value, str), path


def test_report_has_every_key_and_type_of_the_seed_schema():
    report = run_report(make_mixed_run())
    assert_matches_schema(report, SEED_SCHEMA)
    assert report["errors"] and report["samples"]["enriched"] and report["samples"]["failed"]
    json.dumps(report)  # serializable as is


def test_report_of_an_empty_unstarted_run_keeps_every_key():
    report = run_report(make_run(source_label=None))
    assert_matches_schema(report, SEED_SCHEMA)
    assert report["source_label"] == ""
    assert report["started_at"] is None and report["finished_at"] is None
    assert report["duration_s"] == 0
    assert report["totals"] == {
        "total": 0,
        "done": 0,
        "failed": 0,
        "cached_hits": 0,
        "provider_calls": 0,
        "cost_usd": 0,
    }
    assert report["hit_rate"] == {"phone_any_pct": 0, "email_any_pct": 0}
    assert report["cache_hit_ratio"] == 0
    assert report["errors"] == []
    assert report["samples"] == {"enriched": [], "failed": []}
    assert report["state"] == "queued"


# ------------------------------------------------------------------------------------------------
# totals, cost, ratios


def test_totals_count_items_and_this_runs_calls_including_both_sanitized_attempts():
    report = run_report(make_mixed_run())
    assert report["totals"] == {
        "total": 6,
        "done": 4,
        "failed": 2,
        "cached_hits": 1,
        "provider_calls": 5,  # L1, L2, L4 predecessor + final, L6 lost; not the other run's call
        "cost_usd": 0.35,
    }
    assert report["cost_cents"] == 35
    assert report["lost_calls"] == 1
    assert report["provider_requests"] == 3
    assert report["items_by_status"] == {"queued": 0, "in_flight": 0, "done": 4, "failed": 2}


def test_cache_hit_ratio_is_cached_over_cached_plus_provider_served():
    report = run_report(make_mixed_run())
    assert report["provider_served"] == 3
    assert report["cache_hit_ratio"] == 0.25


def test_cache_hit_ratio_rounds_to_four_decimals():
    run = make_run()
    shared = make_call("run-0", contacts_=FULL)
    make_item(run, "A", call=shared, cached=True)
    make_item(run, "B", call=make_call(run.run_id, contacts_=FULL))
    make_item(run, "C", call=make_call(run.run_id, contacts_=FULL))
    assert run_report(run)["cache_hit_ratio"] == 0.3333


def test_cost_counts_only_this_runs_calls_and_rounds_to_cents():
    run = make_run()
    make_item(run, "A", call=make_call(run.run_id, contacts_=FULL, cost_cents=7))
    make_item(run, "B", call=make_call(run.run_id, contacts_=EMPTY, cost_cents=0))  # unmatched: free
    make_item(run, "C", call=make_call("other", contacts_=FULL, cost_cents=1000), cached=True)
    make_call(run.run_id, cost_cents=3, state="errored")
    report = run_report(run)
    assert report["totals"]["cost_usd"] == 0.1
    assert isinstance(report["totals"]["cost_usd"], float)
    assert report["totals"]["provider_calls"] == 3


def test_duration_and_timestamps_are_iso_utc():
    report = run_report(make_mixed_run())
    assert report["duration_s"] == 42.5
    assert report["started_at"] == "2025-09-18T12:00:00.000Z"
    assert datetime.fromisoformat(report["finished_at"]) == datetime(
        2025, 9, 18, 12, 0, 42, 500000, tzinfo=UTC
    )
    assert report["state"] == "finished"
    assert datetime.fromisoformat(report["generated_at"]).tzinfo is not None


def test_hit_rate_is_the_percent_of_done_items_with_any_phone_or_email():
    run = make_run()
    make_item(run, "A", call=make_call(run.run_id, contacts_=FULL))
    make_item(run, "B", call=make_call(run.run_id, contacts_=PHONE_ONLY))
    make_item(run, "C", call=make_call(run.run_id, contacts_=EMPTY))
    dnc_only = contacts([("+18135550199", "Mobile", True, 80)])
    make_item(run, "D", call=make_call(run.run_id, contacts_=dnc_only))  # a DNC number is still a phone found
    make_item(run, "E", call=make_call(run.run_id, contacts_=FULL), cached=True)
    make_item(run, "F", call=make_call(run.run_id, contacts_=None))
    make_item(run, "G", status="failed", call=make_call(run.run_id, contacts_=FULL), last_error="x: y")
    assert run_report(run)["hit_rate"] == {"phone_any_pct": 66.7, "email_any_pct": 33.3}


def test_contacts_of_a_shared_call_are_parsed_once(monkeypatch):
    run = make_run()
    shared = make_call("run-0", contacts_=FULL)
    for i in range(20):
        make_item(run, f"L{i}", call=shared, cached=True)
    calls = []
    real = reports.parse_contacts
    monkeypatch.setattr(reports, "parse_contacts", lambda raw: calls.append(raw) or real(raw))
    report = run_report(run)
    assert report["hit_rate"]["phone_any_pct"] == 100.0
    assert report["cache_hit_ratio"] == 1.0
    stream_parses = len(calls) - len(report["samples"]["enriched"])  # samples are re-read on their own
    assert stream_parses == 1
    calls.clear()
    assert len(list(iter_run_dialer_rows(run))) == 20
    assert len(calls) == 1


def test_writing_both_files_reads_each_calls_contacts_once(monkeypatch):
    run = make_mixed_run()
    shared = make_call("run-0", contacts_=FULL)
    for i in range(5):
        make_item(run, f"S{i}", call=shared, cached=True, position=100 + i)
    parsed = []
    real = reports.parse_contacts
    monkeypatch.setattr(reports, "parse_contacts", lambda raw: parsed.append(raw) or real(raw))
    report_path, _ = write_run_artifacts(run)
    report = json.loads(report_path.read_text(encoding="utf-8"))
    distinct_done_calls = 5  # L1, L2, L3 (other run's), L4 final, the shared one
    assert len(parsed) == distinct_done_calls + len(report["samples"]["enriched"])
    assert report["hit_rate"] == {"phone_any_pct": 88.9, "email_any_pct": 88.9}
    assert report["cache_hit_ratio"] == round(6 / 9, 4)


# ------------------------------------------------------------------------------------------------
# budgets


def test_budgets_show_cap_todays_spend_with_in_flight_estimates_and_soft_pause(settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 20_000
    run = make_mixed_run()  # 35 cents of this run today, plus 7 of run-0
    make_call("run-x", cost_cents=100, budget_day=today() - timedelta(days=1))  # yesterday: not counted
    make_call("run-x", cost_cents=0, state="reserved", estimate_cents=14)
    make_call("run-x", cost_cents=0, state="sent", estimate_cents=21)
    budgets = run_report(run)["budgets"]
    assert budgets == {"daily_cap_usd": 200.0, "spent_usd": 0.77, "soft_paused": True}


def test_budget_spend_is_the_guards_one_definition(monkeypatch):
    """The report's day's spend is ``guards.budget_spent_cents_today`` (one definition, at the report's time)."""
    asked = []

    def spent(now=None):
        asked.append(now)
        return 12_345

    monkeypatch.setattr(guards, "budget_spent_cents_today", spent)
    assert run_report(make_run())["budgets"]["spent_usd"] == 123.45
    assert len(asked) == 1 and asked[0] is not None
    assert not hasattr(reports, "_budget_spent_cents_today")


# ------------------------------------------------------------------------------------------------
# errors and samples


def test_errors_are_grouped_by_reason_before_the_colon_with_up_to_five_samples():
    run = make_run()
    for i in range(7):
        make_item(
            run, f"bad{i}", status="failed", last_error=f"invalid_input: missing street #{i}", position=10 + i
        )
    for i in range(2):
        make_item(
            run, f"lost{i}", status="failed", last_error="provider_outcome_unknown: timeout: x", position=i
        )
    make_item(run, "plain", status="failed", last_error="budget exhausted", position=30)
    make_item(run, "none", status="failed", last_error=None, position=31)
    make_item(run, "ok", call=make_call(run.run_id, contacts_=FULL), position=32)
    errors = run_report(run)["errors"]
    assert errors == [
        {"reason": "invalid_input", "count": 7, "samples": ["bad0", "bad1", "bad2", "bad3", "bad4"]},
        {"reason": "provider_outcome_unknown", "count": 2, "samples": ["lost0", "lost1"]},
        {"reason": "budget exhausted", "count": 1, "samples": ["plain"]},
        {"reason": "unknown", "count": 1, "samples": ["none"]},
    ]


def test_error_list_is_bounded_and_still_adds_up(monkeypatch):
    monkeypatch.setattr(reports, "ERROR_REASONS_MAX", 3)
    run = make_run()
    for i in range(6):
        make_item(run, f"f{i}", status="failed", last_error=f"reason{i}: detail")
    errors = run_report(run)["errors"]
    assert [e["reason"] for e in errors] == ["reason0", "reason1", "other"]
    assert sum(e["count"] for e in errors) == 6
    assert errors[-1]["reasons_folded"] == 4


def test_failed_samples_are_the_first_ten_failed_items():
    run = make_run()
    for i in range(12):
        make_item(run, f"f{i:02d}", status="failed", last_error=f"invalid_input: row {i}", position=i)
    failed = run_report(run)["samples"]["failed"]
    assert failed == [{"lead_id": f"f{i:02d}", "last_error": f"invalid_input: row {i}"} for i in range(10)]


def test_enriched_samples_are_up_to_ten_done_items_with_contacts():
    run = make_run()
    make_item(run, "empty", call=make_call(run.run_id, contacts_=EMPTY), position=0)
    for i in range(12):
        make_item(run, f"e{i:02d}", call=make_call(run.run_id, contacts_=FULL), position=i + 1)
    enriched = run_report(run)["samples"]["enriched"]
    assert [s["lead_id"] for s in enriched] == [f"e{i:02d}" for i in range(10)]
    assert enriched[0]["phones"] == ["+18135550142"]
    assert enriched[0]["emails"] == ["ann@example.com"]
    assert enriched[0]["cached"] is False
    assert isinstance(enriched[0]["provider_call_id"], int)
    assert "attempts" not in enriched[0]


def test_sanitized_retry_sample_labels_both_attempts():
    run = make_mixed_run()
    enriched = {s["lead_id"]: s for s in run_report(run)["samples"]["enriched"]}
    item = RunItem.objects.get(run=run, lead_id="L4")
    assert enriched["L4"]["provider_call_id"] == item.provider_call_id
    assert enriched["L4"]["emails"] == ["unit@example.com"]
    assert enriched["L4"]["attempts"] == [
        {"provider_call_id": item.predecessor_call_id, "label": "sanitized_retry_predecessor"},
        {"provider_call_id": item.provider_call_id, "label": "address_sanitized"},
    ]
    assert enriched["L3"]["cached"] is True
    assert "attempts" not in enriched["L1"]


# ------------------------------------------------------------------------------------------------
# query count


def make_run_with_items(run_id: str, n: int) -> Run:
    run = make_run(run_id)
    shared = make_call("run-0", contacts_=FULL)
    calls = [make_call(run_id, contacts_=FULL if i % 3 else PHONE_ONLY) for i in range(n // 2)]
    rows = []
    for i in range(n):
        if i % 5 == 4:
            rows.append(
                item_fields(run, f"L{i}", status="failed", last_error=f"reason{i % 2}: detail", position=i)
            )
        elif i % 2:
            rows.append(item_fields(run, f"L{i}", call=shared, cached=True, position=i))
        else:
            rows.append(item_fields(run, f"L{i}", call=calls[i // 2], position=i))
    RunItem.objects.bulk_create([RunItem(**r) for r in rows])
    return run


def count_queries(fn) -> int:
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx.captured_queries)


def test_run_report_issues_the_same_bounded_number_of_queries_for_50_or_500_items(
    django_assert_max_num_queries,
):
    small = make_run_with_items("run-small", 50)
    large = make_run_with_items("run-large", 500)
    with django_assert_max_num_queries(10):
        run_report(small)
    with django_assert_max_num_queries(10):
        report = run_report(large)
    assert report["totals"]["total"] == 500
    assert count_queries(lambda: run_report(small)) == count_queries(lambda: run_report(large))


def test_dialer_rows_take_one_query_whatever_the_item_count():
    small = make_run_with_items("run-small", 50)
    large = make_run_with_items("run-large", 500)
    assert count_queries(lambda: list(iter_run_dialer_rows(small))) == 1
    assert count_queries(lambda: list(iter_run_dialer_rows(large))) == 1


# ------------------------------------------------------------------------------------------------
# dialer rows of a run


def test_run_dialer_rows_follow_item_position_and_keep_failed_leads():
    run = make_mixed_run()
    make_item(run, "L0", status="queued", position=0)
    rows = [dict(zip(DIALER_HEADER, r, strict=True)) for r in iter_run_dialer_rows(run)]
    assert [r["LeadID"] for r in rows] == ["L0", "L1", "L2", "L3", "L4", "L5", "L6"]
    by_id = {r["LeadID"]: r for r in rows}
    assert by_id["L1"]["Phone1"] == "8135550142" and by_id["L1"]["Email1"] == "ann@example.com"
    assert by_id["L1"]["Phone1_source"] == "batchdata" and by_id["L1"]["Cached"] == "no"
    assert by_id["L3"]["Cached"] == "yes" and by_id["L3"]["Phone1"] == "8135550142"
    assert by_id["L4"]["Email1"] == "unit@example.com" and by_id["L4"]["Phone1"] == ""
    for lead in ("L0", "L5", "L6"):
        assert all(by_id[lead][k] == "" for k in DIALER_HEADER[3:11])
        assert by_id[lead]["DNC_Excluded"] == "0" and by_id[lead]["DNC_Stale"] == "0"
        assert by_id[lead]["Address"] == f"{lead} Main St, Tampa, FL 33610"


# ------------------------------------------------------------------------------------------------
# files


def test_artifacts_land_under_run_reports_dir_and_set_report_written_at(settings):
    run = make_mixed_run()
    make_item(
        run, "L7", call=make_call(run.run_id, contacts_=FULL), owner_display="=José 🏠 Núñez", position=7
    )
    report_path, csv_path = write_run_artifacts(run)
    folder = settings.RUN_REPORTS_DIR / run.run_id
    assert (report_path, csv_path) == (folder / "report.json", folder / "enriched.csv")
    assert (report_path, csv_path) == artifact_paths(run.run_id)
    assert sorted(p.name for p in folder.iterdir()) == ["enriched.csv", "report.json"]  # no temp files left

    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert_matches_schema(report, SEED_SCHEMA)
    assert report["totals"]["total"] == 7

    raw = csv_path.read_bytes()
    assert raw.startswith(b'\xef\xbb\xbf"LeadID","Address"')
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == DIALER_HEADER
    assert len(rows) == 8
    assert rows[-1][2] == "'=José 🏠 Núñez"

    run.refresh_from_db()
    assert run.report_written_at is not None


def test_rewriting_artifacts_replaces_each_file_whole(settings):
    run = make_mixed_run()
    report_path, csv_path = write_run_artifacts(run)
    make_item(run, "L9", call=make_call(run.run_id, contacts_=FULL), position=9)
    write_run_artifacts(run)
    assert json.loads(report_path.read_text(encoding="utf-8"))["totals"]["total"] == 7
    with open(csv_path, encoding="utf-8-sig", newline="") as fh:
        assert len(list(csv.reader(fh))) == 8
    assert sorted(p.name for p in report_path.parent.iterdir()) == ["enriched.csv", "report.json"]


def test_files_are_written_to_a_temp_file_in_the_same_folder_then_renamed(monkeypatch):
    run = make_mixed_run()
    moves = []
    real_replace = os.replace

    def spy(src, dst):
        moves.append((src, dst, os.path.getsize(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(reports.os, "replace", spy)
    report_path, csv_path = write_run_artifacts(run)
    assert {str(dst) for _, dst, _ in moves} == {str(report_path), str(csv_path)}
    for src, dst, size in moves:
        assert os.path.dirname(src) == os.path.dirname(dst)
        assert src != str(dst)
        assert size > 0


def test_a_write_that_fails_midway_keeps_the_previous_complete_file(monkeypatch):
    run = make_mixed_run()
    _, csv_path = write_run_artifacts(run)
    before = csv_path.read_bytes()

    def broken_writer(rows, fh, **kwargs):
        fh.write("half a file")
        raise RuntimeError("database went away")

    monkeypatch.setattr(reports, "write_dialer_csv", broken_writer)
    with pytest.raises(RuntimeError):
        write_run_artifacts(run)
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in csv_path.parent.iterdir()) == ["enriched.csv", "report.json"]


@pytest.mark.parametrize("run_id", ["../etc", "a/b", "", ".hidden", "..", "a\\b", "x" * 65, "a\x00b"])
def test_artifact_paths_refuse_run_ids_that_are_not_plain_folder_names(run_id):
    with pytest.raises(ValueError):
        artifact_paths(run_id)


def test_artifact_paths_accept_generated_run_ids(settings):
    report_path, csv_path = artifact_paths("run_2025-09-18.abc123")
    assert report_path == settings.RUN_REPORTS_DIR / "run_2025-09-18.abc123" / "report.json"
    assert csv_path.name == "enriched.csv"
