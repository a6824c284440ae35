"""GET /api/metrics (JSON and Prometheus text) and the provider field of GET /api/health."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from skiptrace import service
from skiptrace.models import GuardState
from tests import fakes

pytestmark = pytest.mark.django_db

SEED_KEYS = {"provider_calls_total", "cache_hits_total", "budget_spent_cents_total", "circuit_state", "rps_current", "queue_depth"}
PROM_LINE = re.compile(r'^(convexa_[a-z_]+)(\{[a-z_]+="[^"]*"\})? (-?\d+(?:\.\d+)?)$')


def make_lead(n: int, marker: str = "ALWAYSMATCH") -> dict:
    return {"lead_id": f"M-{n:04d}", "first_name": "Kevin", "last_name": "Nguyen",
            "street": f"{300 + n} {marker} Blvd", "city": "Austin", "state": "TX", "zip": "78701"}


def metrics(client) -> dict:
    response = client.get("/api/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def open_breaker(*, probe_in_s: float) -> None:
    now = dt.datetime.now(dt.UTC)
    GuardState.objects.update_or_create(
        name="breaker", defaults={"state": "open", "opened_at": now, "next_probe_at": now + dt.timedelta(seconds=probe_in_s)}
    )


def test_metrics_have_the_seed_keys_and_start_at_zero(api_client):
    data = metrics(api_client)

    assert SEED_KEYS <= set(data)
    assert data["provider_calls_total"] == {"2xx": 0, "4xx": 0, "5xx": 0}
    assert data["cache_hits_total"] == 0
    assert data["budget_spent_cents_total"] == 0
    assert data["circuit_state"] == "closed"
    assert data["rps_current"] == 0
    assert data["queue_depth"] == 0


def test_queue_depth_counts_queued_items_and_drains_after_work(api_client, sandbox):
    create_run(api_client, [make_lead(i) for i in range(6)] + [{"lead_id": "bad", "street": ""}])

    assert metrics(api_client)["queue_depth"] == 6  # the invalid lead is failed at once, never queued

    work()
    assert metrics(api_client)["queue_depth"] == 0


def test_provider_calls_spend_and_cache_hits_move_after_runs(api_client, sandbox):
    leads = [make_lead(i) for i in range(4)] + [make_lead(9, marker="NOMATCH")]
    create_run(api_client, leads)
    work()

    after_first = metrics(api_client)
    assert after_first["provider_calls_total"] == {"2xx": 5, "4xx": 0, "5xx": 0}
    assert after_first["budget_spent_cents_total"] == 28  # four matches at 7 cents
    assert after_first["cache_hits_total"] == 0
    assert after_first["rps_current"] > 0

    service.L1.clear()
    create_run(api_client, leads)
    work()

    after_second = metrics(api_client)
    assert after_second["cache_hits_total"] == 5
    assert after_second["provider_calls_total"] == after_first["provider_calls_total"]
    assert after_second["budget_spent_cents_total"] == 28


def test_provider_5xx_is_counted(api_client, sandbox, settings):
    settings.SKIP_TRACE_MAX_ATTEMPTS = 1
    sandbox.update_config(fault="500")
    create_run(api_client, [make_lead(0), make_lead(1)])

    work()

    data = metrics(api_client)
    assert data["provider_calls_total"]["5xx"] == 2
    assert data["provider_calls_total"]["2xx"] == 0
    assert data["budget_spent_cents_total"] == 0  # an error answer costs nothing


def test_circuit_state_follows_the_breaker_row(api_client):
    open_breaker(probe_in_s=300)
    assert metrics(api_client)["circuit_state"] == "open"

    open_breaker(probe_in_s=-1)
    assert metrics(api_client)["circuit_state"] == "half_open"


def test_prometheus_format_is_text_with_convexa_metric_lines(api_client, sandbox):
    create_run(api_client, [make_lead(0), make_lead(1)])
    work()

    response = api_client.get("/api/metrics", {"format": "prometheus"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    lines = [line for line in response.content.decode().splitlines() if line and not line.startswith("#")]
    values = {}
    for line in lines:
        match = PROM_LINE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        values[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    assert values['convexa_provider_calls_total{status="2xx"}'] == 2
    assert values["convexa_budget_spent_cents_total"] == 14
    assert values["convexa_queue_depth"] == 0
    assert values['convexa_circuit_state{state="closed"}'] == 1
    assert "convexa_cache_hits_total" in values
    assert "# TYPE convexa_provider_calls_total counter" in response.content.decode()


def test_metrics_need_the_admin_token_and_get_only(anon_client, api_client):
    assert anon_client.get("/api/metrics").status_code == 401
    response = api_client.post("/api/metrics")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"


def test_health_says_circuit_open_while_the_breaker_row_is_open(anon_client):
    assert anon_client.get("/api/health").json()["provider"] == "ready"

    open_breaker(probe_in_s=300)

    response = anon_client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "db": True, "provider": "circuit_open"}


def test_health_is_ready_again_once_the_breaker_closes(anon_client):
    open_breaker(probe_in_s=300)
    GuardState.objects.filter(name="breaker").update(state="closed", next_probe_at=None)

    assert anon_client.get("/api/health").json()["provider"] == "ready"


def create_run(client, leads) -> str:
    return fakes.api_create_run(client, leads, "metrics")


def work() -> None:
    fakes.drain()
