"""HTTP API of runs: POST /api/skiptrace-runs and /api/skiptrace-runs/<run_id>/{status,resume,report,artifacts}.

Runs are worked synchronously in the test thread (``Worker.process_one_batch``) against the bundled
BatchData sandbox on loopback. Streets with "ALWAYSMATCH" always match (a clean mobile and an email),
"NOMATCH" never match, so every count below is exact.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from skiptrace import service
from skiptrace.models import GuardState, ProviderCall, Run, RunItem
from skiptrace.worker import Worker
from tests.conftest import ApiClient
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

ON_POSTGRES = "postgresql" in django_settings.DATABASES["default"]["ENGINE"]

STATUS_KEYS = {
    "run_id", "source_label", "state", "total", "queued", "in_flight", "done", "failed", "cache_hits",
    "provider_calls", "cost_usd", "soft_paused", "reason", "started_at", "finished_at",
}
DIALER_HEADER = [
    "LeadID", "Address", "Owner", "Phone1", "Phone2", "Phone3", "Email1", "Email2", "Email3",
    "Phone1_source", "Email1_source", "Cached", "DNC_Excluded", "DNC_Stale",
]


def make_lead(n: int, marker: str = "ALWAYSMATCH", **overrides) -> dict:
    lead = {
        "lead_id": f"R-{n:05d}", "first_name": "Dana", "last_name": "Reyes",
        "street": f"{100 + n} {marker} Rd", "city": "Tampa", "state": "FL", "zip": "33610",
    }
    lead.update(overrides)
    return lead


def create_run(client, leads, **body) -> str:
    response = client.post_json("/api/skiptrace-runs", {"source_label": "test-cohort", "leads": leads, **body})
    assert response.status_code == 200, response.content
    return response.json()["run_id"]


def work(*, batch_size: int | None = None, max_batches: int = 50) -> int:
    """Work every claimable item; returns the number of batches processed."""
    worker = Worker(concurrency=1, batch_size=batch_size)
    for n in range(max_batches):
        if not worker.process_one_batch():
            return n
    raise AssertionError("the worker never ran out of work")


def status_of(client, run_id: str) -> dict:
    response = client.get(f"/api/skiptrace-runs/{run_id}/status")
    assert response.status_code == 200, response.content
    return response.json()


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def download(client, url: str):
    response = client.get(url)
    # Consuming streaming_content closes the response (the test client's wrapper does it without
    # closing the database connection, which a bare response.close() here would do).
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return response, content


# --- create and status -----------------------------------------------------------------------------


def test_create_returns_run_id_and_status_has_every_contract_key_while_queued(api_client):
    response = api_client.post_json("/api/skiptrace-runs", {"source_label": "cohort-609", "leads": [make_lead(i) for i in range(3)]})

    assert response.status_code == 200
    run_id = response.json()["run_id"]
    assert isinstance(run_id, str) and run_id
    status = status_of(api_client, run_id)
    assert STATUS_KEYS <= set(status)
    assert status["run_id"] == run_id
    assert status["source_label"] == "cohort-609"
    assert status["state"] == "queued"
    assert (status["total"], status["queued"], status["in_flight"], status["done"], status["failed"]) == (3, 3, 0, 0, 0)
    assert (status["cache_hits"], status["provider_calls"], status["cost_usd"]) == (0, 0, 0)
    assert status["soft_paused"] is False
    assert status["reason"] is None
    assert status["started_at"] is None and status["finished_at"] is None


def test_working_a_run_moves_it_from_queued_to_finished_with_counts_and_cost(api_client, sandbox):
    run_id = create_run(api_client, [make_lead(i) for i in range(4)] + [make_lead(9, marker="NOMATCH")])

    work()

    status = status_of(api_client, run_id)
    assert status["state"] == "finished"
    assert (status["total"], status["queued"], status["in_flight"], status["done"], status["failed"]) == (5, 0, 0, 5, 0)
    assert status["provider_calls"] == 5
    assert status["cache_hits"] == 0
    assert status["cost_usd"] == pytest.approx(0.28)  # 4 matches at $0.07; the unmatched one is free
    assert status["soft_paused"] is False and status["reason"] is None
    assert parse_iso(status["started_at"]) <= parse_iso(status["finished_at"])
    assert sandbox.stats.snapshot()["items"] == 5


def test_same_ten_leads_twice_second_run_is_all_cache_hits_and_provider_sees_nothing_new(api_client, sandbox):
    leads = [make_lead(i) for i in range(10)]
    first = create_run(api_client, leads)
    work()
    items_after_first = sandbox.stats.snapshot()["items"]
    assert items_after_first == 10
    service.L1.clear()  # as if another process ran the second run: the L2 (database) cache must answer

    second = create_run(api_client, leads)
    work()

    assert sandbox.stats.snapshot()["items"] == items_after_first
    status = status_of(api_client, second)
    assert status["state"] == "finished"
    assert status["done"] == 10
    assert status["cache_hits"] == 10
    assert status["provider_calls"] == 0
    assert status["cost_usd"] == 0
    report = api_client.get(f"/api/skiptrace-runs/{second}/report").json()
    assert report["totals"]["cached_hits"] == 10
    assert report["totals"]["provider_calls"] == 0
    assert report["cache_hit_ratio"] == 1.0
    assert status_of(api_client, first)["cache_hits"] == 0


def test_two_hundred_lead_run_fills_both_tables_and_writes_report_json_and_enriched_csv(api_client, sandbox, settings):
    leads = [make_lead(i, marker="ALWAYSMATCH" if i < 150 else "NOMATCH") for i in range(200)]
    run_id = create_run(api_client, leads)

    work()

    assert Run.objects.filter(run_id=run_id).count() == 1
    assert RunItem.objects.filter(run_id=run_id).count() == 200
    assert RunItem.objects.filter(run_id=run_id, status="done").count() == 200
    folder = Path(settings.RUN_REPORTS_DIR) / run_id
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["run_id"] == run_id
    assert report["totals"] == {"total": 200, "done": 200, "failed": 0, "cached_hits": 0, "provider_calls": 200, "cost_usd": 10.5}
    assert report["hit_rate"] == {"phone_any_pct": 75.0, "email_any_pct": 75.0}
    raw_csv = (folder / "enriched.csv").read_bytes()
    assert raw_csv.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw_csv.decode("utf-8-sig"))))
    assert rows[0] == DIALER_HEADER
    assert len(rows) == 201
    assert {row[0] for row in rows[1:]} == {lead["lead_id"] for lead in leads}
    assert sandbox.stats.snapshot()["requests"] == 2  # 100 leads per provider request


def test_report_has_the_seed_schema_and_right_totals(api_client, sandbox):
    leads = [make_lead(i) for i in range(3)] + [make_lead(3, marker="NOMATCH"), make_lead(4, street="")]
    run_id = create_run(api_client, leads, policy={"force": False, "fallback": False, "retry_sanitized": True})
    work()

    response = api_client.get(f"/api/skiptrace-runs/{run_id}/report")

    assert response.status_code == 200
    report = response.json()
    assert {"run_id", "source_label", "started_at", "finished_at", "duration_s", "totals", "hit_rate",
            "cache_hit_ratio", "budgets", "errors", "samples"} <= set(report)
    assert report["run_id"] == run_id and report["source_label"] == "test-cohort"
    assert parse_iso(report["started_at"]) <= parse_iso(report["finished_at"])
    assert isinstance(report["duration_s"], int | float) and report["duration_s"] >= 0
    assert report["totals"] == {"total": 5, "done": 4, "failed": 1, "cached_hits": 0, "provider_calls": 4, "cost_usd": 0.21}
    assert report["hit_rate"] == {"phone_any_pct": 75.0, "email_any_pct": 75.0}
    assert report["cache_hit_ratio"] == 0
    assert report["budgets"]["daily_cap_usd"] == 200.0
    assert report["budgets"]["spent_usd"] == pytest.approx(0.21)
    assert report["budgets"]["soft_paused"] is False
    assert report["errors"] == [{"reason": "invalid_input", "count": 1, "samples": ["R-00004"]}]
    enriched = report["samples"]["enriched"]
    assert [s["lead_id"] for s in enriched] == ["R-00000", "R-00001", "R-00002"]
    assert all(s["phones"] and s["emails"] for s in enriched)
    assert all(isinstance(p, str) for s in enriched for p in s["phones"] + s["emails"])
    assert report["samples"]["failed"] == [{"lead_id": "R-00004", "last_error": "invalid_input: missing street"}]


# --- artifacts -------------------------------------------------------------------------------------


def test_artifacts_are_409_not_ready_before_the_run_finishes(api_client):
    run_id = create_run(api_client, [make_lead(0)])

    body = assert_error(api_client.get(f"/api/skiptrace-runs/{run_id}/artifacts"), 409, "NotReady")

    assert body["state"] == "queued"


def test_artifact_links_are_signed_and_download_without_the_admin_token(api_client, anon_client, sandbox):
    run_id = create_run(api_client, [make_lead(i) for i in range(3)])
    work()

    response = api_client.get(f"/api/skiptrace-runs/{run_id}/artifacts")

    assert response.status_code == 200
    links = response.json()
    assert links["run_id"] == run_id
    assert parse_iso(links["expires_at"]) > dt.datetime.now(dt.UTC)
    assert "token=" in links["report_json_url"] and "token=" in links["enriched_csv_url"]
    report_response, report_bytes = download(anon_client, links["report_json_url"])
    assert report_response.status_code == 200
    assert report_response["Content-Type"].startswith("application/json")
    assert json.loads(report_bytes)["totals"]["done"] == 3
    csv_response, csv_bytes = download(anon_client, links["enriched_csv_url"])
    assert csv_response.status_code == 200
    assert csv_response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(csv_bytes.decode("utf-8-sig"))))
    assert rows[0] == DIALER_HEADER and len(rows) == 4


def test_artifact_link_with_a_tampered_token_is_403(api_client, anon_client, sandbox):
    run_id = create_run(api_client, [make_lead(0)])
    work()
    url = api_client.get(f"/api/skiptrace-runs/{run_id}/artifacts").json()["report_json_url"]
    tampered = url[:-1] + ("A" if url[-1] != "A" else "B")
    expires_edited = url.replace("token=", "token=9")

    for bad in (tampered, expires_edited, url.split("?")[0], url.split("token=")[0] + "token=garbage"):
        response, _ = download(anon_client, bad)
        assert_error(response, 403, "Forbidden")
    assert download(anon_client, url)[0].status_code == 200


def test_artifact_token_of_another_run_or_file_is_403(api_client, anon_client, sandbox):
    run_a = create_run(api_client, [make_lead(0)])
    work()
    run_b = create_run(api_client, [make_lead(1)])
    work()
    links_a = api_client.get(f"/api/skiptrace-runs/{run_a}/artifacts").json()
    links_b = api_client.get(f"/api/skiptrace-runs/{run_b}/artifacts").json()
    token_b = links_b["report_json_url"].split("token=")[1]
    token_a_csv = links_a["enriched_csv_url"].split("token=")[1]

    other_run = links_a["report_json_url"].split("token=")[0] + "token=" + token_b
    other_file = links_a["report_json_url"].split("token=")[0] + "token=" + token_a_csv

    assert_error(download(anon_client, other_run)[0], 403, "Forbidden")
    assert_error(download(anon_client, other_file)[0], 403, "Forbidden")


# --- resume ----------------------------------------------------------------------------------------


def test_resume_requeues_only_failed_items_and_leaves_done_and_invalid_items_alone(api_client, sandbox, settings):
    settings.SKIP_TRACE_MAX_ATTEMPTS = 1  # a provider 500 fails the item at once (no backoff wait)
    leads = [make_lead(0), make_lead(1), make_lead(2), make_lead(3), make_lead(4, zip="", city="", state="")]
    run_id = create_run(api_client, leads)
    worker = Worker(concurrency=1, batch_size=2)
    assert worker.process_one_batch()  # R-00000, R-00001 -> done
    sandbox.update_config(fault="500")
    assert worker.process_one_batch()  # R-00002, R-00003 -> failed (provider 500)
    assert not worker.process_one_batch()
    status = status_of(api_client, run_id)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 2, 3)
    done_before = {i.lead_id: (i.provider_call_id, i.updated_at) for i in RunItem.objects.filter(run_id=run_id, status="done")}
    sandbox.update_config(fault=None)
    items_before = sandbox.stats.snapshot()["items"]

    response = api_client.post(f"/api/skiptrace-runs/{run_id}/resume?overrideBudget=0")

    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "requeued": 2, "override_budget": False}
    assert set(RunItem.objects.filter(run_id=run_id, status="queued").values_list("lead_id", flat=True)) == {"R-00002", "R-00003"}
    work()
    status = status_of(api_client, run_id)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 4, 1)
    assert sandbox.stats.snapshot()["items"] == items_before + 2
    after = {i.lead_id: (i.provider_call_id, i.updated_at) for i in RunItem.objects.filter(run_id=run_id, lead_id__in=done_before)}
    assert after == done_before
    invalid = RunItem.objects.get(run_id=run_id, lead_id="R-00004")
    assert invalid.status == "failed" and invalid.last_error.startswith("invalid_input:")
    report = api_client.get(f"/api/skiptrace-runs/{run_id}/report").json()
    assert (report["totals"]["done"], report["totals"]["failed"]) == (4, 1)


def test_resume_of_a_finished_run_with_nothing_to_do_requeues_zero(api_client, sandbox):
    run_id = create_run(api_client, [make_lead(0)])
    work()

    response = api_client.post(f"/api/skiptrace-runs/{run_id}/resume")

    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "requeued": 0, "override_budget": False}
    assert status_of(api_client, run_id)["state"] == "finished"


@pytest.mark.parametrize("value", ["2", "yes", "-1"])
def test_resume_with_override_budget_other_than_0_or_1_is_400(api_client, value):
    run_id = create_run(api_client, [make_lead(0)])

    body = assert_error(api_client.post(f"/api/skiptrace-runs/{run_id}/resume?overrideBudget={value}"), 400, "ValidationError")

    assert "overrideBudget" in body["fields"]


def test_budget_cap_mid_run_pauses_it_and_resume_with_override_finishes_it(api_client, sandbox, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 14  # two matches at 7 cents
    run_id = create_run(api_client, [make_lead(i) for i in range(5)])

    work()

    status = status_of(api_client, run_id)
    assert status["state"] == "paused"
    assert status["reason"] == "daily_budget"
    assert status["soft_paused"] is True
    assert (status["done"], status["queued"], status["failed"]) == (2, 3, 0)
    assert sandbox.stats.snapshot()["items"] == 2
    refused = assert_error(api_client.post(f"/api/skiptrace-runs/{run_id}/resume?overrideBudget=0"), 429, "BudgetPause")
    assert refused["reason"] == "daily_budget" and isinstance(refused["retry_after"], int)

    response = api_client.post(f"/api/skiptrace-runs/{run_id}/resume?overrideBudget=1")

    assert response.status_code == 200
    assert response.json() == {"run_id": run_id, "requeued": 3, "override_budget": True}
    work()
    status = status_of(api_client, run_id)
    assert (status["state"], status["done"], status["soft_paused"]) == ("finished", 5, False)


def test_run_waiting_on_an_open_circuit_is_paused_with_reason_circuit_open(api_client, sandbox):
    now = dt.datetime.now(dt.UTC)
    GuardState.objects.create(name="breaker", state="open", opened_at=now, next_probe_at=now + dt.timedelta(minutes=5))
    run_id = create_run(api_client, [make_lead(0), make_lead(1)])

    work()

    status = status_of(api_client, run_id)
    assert status["state"] == "paused"
    assert status["reason"] == "circuit_open"
    assert (status["queued"], status["done"], status["failed"]) == (2, 0, 0)
    assert sandbox.stats.snapshot()["requests"] == 0


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", "status"), ("post", "resume"), ("get", "report"), ("get", "artifacts")],
)
def test_unknown_run_is_404_json_on_every_run_route(api_client, method, suffix):
    response = getattr(api_client, method)(f"/api/skiptrace-runs/run_doesnotexist/{suffix}")

    body = assert_error(response, 404, "NotFound")
    assert "run_doesnotexist" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/skiptrace-runs"),
        ("post", "/api/skiptrace-runs/{run}/status"),
        ("get", "/api/skiptrace-runs/{run}/resume"),
        ("delete", "/api/skiptrace-runs/{run}/report"),
        ("post", "/api/skiptrace-runs/{run}/artifacts"),
        ("post", "/api/artifacts/{run}/report.json"),
    ],
)
def test_wrong_method_is_405_json(api_client, method, path):
    run_id = create_run(api_client, [make_lead(0)])

    response = getattr(api_client, method)(path.format(run=run_id))

    assert_error(response, 405, "MethodNotAllowed")


@pytest.mark.parametrize("path", ["/api/artifacts/{run}/report.json", "/api/skiptrace-runs/{run}/cancel"])
def test_post_to_a_non_post_api_path_is_json_even_with_csrf_checks_on(api_client, path):
    run_id = create_run(api_client, [make_lead(0)])
    strict_client = ApiClient(enforce_csrf_checks=True)

    response = strict_client.post(path.format(run=run_id))

    assert response["Content-Type"].startswith("application/json"), response.content[:80]
    assert response.status_code in (404, 405)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"leads": [{"lead_id": "a", "street": "1 Main St", "zip": 33610}]}, "leads[0].zip"),
        ({"leads": [make_lead(0), {"lead_id": "b", "street": True, "zip": "33610"}]}, "leads[1].street"),
        ({"leads": [{"lead_id": "a", "street": "1 Main St", "city": {"name": "Tampa"}, "state": "FL"}]}, "leads[0].city"),
        ({"leads": [{"lead_id": "a", "street": "1 Main St", "first_name": ["Ann"], "zip": "33610"}]}, "leads[0].first_name"),
        ({"leads": [{"lead_id": 17, "street": "1 Main St", "zip": "33610"}]}, "leads[0].lead_id"),
        ({"leads": [{"street": "1 Main St", "zip": "33610"}]}, "leads[0].lead_id"),
        ({"leads": [{"lead_id": "x" * 65, "street": "1 Main St", "zip": "33610"}]}, "leads[0].lead_id"),
        ({"leads": ["1 Main St"]}, "leads[0]"),
        ({"leads": {"lead_id": "a"}}, "leads"),
        ({"leads": "R-1,1 Main St"}, "leads"),
        ({"leads": []}, "leads"),
        ({}, "leads"),
        ({"leads": [make_lead(0)], "policy": {"force": "yes"}}, "policy.force"),
        ({"leads": [make_lead(0)], "policy": {"force": 1}}, "policy.force"),
        ({"leads": [make_lead(0)], "policy": {"retry_sanitized": "false"}}, "policy.retry_sanitized"),
        ({"leads": [make_lead(0)], "policy": "force"}, "policy"),
        ({"leads": [make_lead(0)], "source_label": 42}, "source_label"),
        ("{not json", "body"),
        ("", "body"),
        (json.dumps([make_lead(0)]), "body"),
        ("null", "body"),
    ],
)
def test_bad_body_is_400_validation_error_naming_the_field(api_client, body, field):
    response = api_client.post_json("/api/skiptrace-runs", body)

    error = assert_error(response, 400, "ValidationError")
    assert field in error["fields"], error
    assert Run.objects.count() == 0


def test_wrong_types_in_several_leads_are_all_named_by_index(api_client):
    leads = [make_lead(0), make_lead(1, zip=33610), make_lead(2), make_lead(3, state=None, city=False)]

    error = assert_error(api_client.post_json("/api/skiptrace-runs", {"leads": leads}), 400, "ValidationError")

    assert set(error["fields"]) == {"leads[1].zip", "leads[3].city"}


def test_more_than_100000_leads_is_413_payload_too_large(api_client):
    body = '{"leads": [' + ",".join(["{}"] * 100_001) + "]}"

    assert_error(api_client.post_json("/api/skiptrace-runs", body), 413, "PayloadTooLarge")
    assert Run.objects.count() == 0


def test_body_declared_over_50mb_is_413_payload_too_large(api_client):
    response = api_client.post_json("/api/skiptrace-runs", {"leads": [make_lead(0)]}, CONTENT_LENGTH=str(50 * 1024 * 1024 + 1))

    assert_error(response, 413, "PayloadTooLarge")


def test_incomplete_leads_are_accepted_as_failed_invalid_input_items_and_never_sent(api_client, sandbox):
    leads = [
        make_lead(0, street=""),
        make_lead(1, street=None),
        make_lead(2, zip="", city="", state=""),
        make_lead(3, zip="", state=""),
        make_lead(4),
    ]

    response = api_client.post_json("/api/skiptrace-runs", {"leads": leads})

    assert response.status_code == 200
    run_id = response.json()["run_id"]
    work()
    items = {i.lead_id: i for i in RunItem.objects.filter(run_id=run_id)}
    for lead_id in ("R-00000", "R-00001", "R-00002", "R-00003"):
        assert items[lead_id].status == "failed"
        assert items[lead_id].last_error.startswith("invalid_input:"), items[lead_id].last_error
    assert items["R-00004"].status == "done"
    status = status_of(api_client, run_id)
    assert (status["state"], status["done"], status["failed"]) == ("finished", 1, 4)
    assert sandbox.stats.snapshot()["items"] == 1
    assert set(ProviderCall.objects.values_list("lead_id", flat=True)) == {"R-00004"}


def test_create_while_todays_budget_is_spent_is_429_budget_pause(api_client, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0

    response = api_client.post_json("/api/skiptrace-runs", {"leads": [make_lead(0)]})

    body = assert_error(response, 429, "BudgetPause")
    assert body["reason"] == "daily_budget"
    assert isinstance(body["retry_after"], int) and 0 < body["retry_after"] <= 86_401
    assert int(response["Retry-After"]) == body["retry_after"]
    assert Run.objects.count() == 0


# --- input that must never be a 500 ----------------------------------------------------------------


def test_deeply_nested_json_body_is_400_not_500(api_client):
    body = '{"leads": ' + "[" * 100_000 + "]" * 100_000 + "}"

    assert_error(api_client.post_json("/api/skiptrace-runs", body), 400, "ValidationError")


def test_lone_surrogate_in_a_lead_field_is_400_not_500(api_client):
    body = '{"leads": [{"lead_id": "a\\ud800", "street": "1 Main St", "zip": "33610"}]}'

    error = assert_error(api_client.post_json("/api/skiptrace-runs", body), 400, "ValidationError")
    assert "leads[0].lead_id" in error["fields"]


def test_nul_character_in_a_lead_field_is_never_a_500(api_client):
    body = '{"source_label": "x\\u0000", "leads": [{"lead_id": "a", "street": "1 Main\\u0000 St", "zip": "33610"}]}'

    response = api_client.post_json("/api/skiptrace-runs", body)

    assert response.status_code in (200, 400), response.content
    assert response["Content-Type"].startswith("application/json")


def test_run_id_with_a_nul_character_is_404_not_500(api_client):
    assert_error(api_client.get("/api/skiptrace-runs/%00/status"), 404, "NotFound")
