"""GET /api/debug/skiptrace-latest?limit=N: the latest provider calls, sanitized."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from skiptrace.models import ProviderCall
from tests.conftest import PROVIDER_TOKEN
from tests.helpers import run_leads

pytestmark = pytest.mark.django_db

URL = "/api/debug/skiptrace-latest"
CALL_KEYS = {"provider_call_id", "run_id", "lead_id", "state", "status_code", "match_count", "cost_cents",
             "attempt_reason", "request", "response", "created_at"}


def make_lead(n: int, marker: str = "ALWAYSMATCH") -> dict:
    return {"lead_id": f"D-{n:04d}", "first_name": "Gloria", "last_name": "Patel",
            "street": f"{500 + n} {marker} St", "city": "Denver", "state": "CO", "zip": "80202"}


def latest(client, **params):
    response = client.get(URL, params)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/json")
    return response.json()["calls"]


def test_latest_calls_come_newest_first_with_every_contract_field(api_client, sandbox):
    run_id = run_leads(api_client, [make_lead(i) for i in range(3)] + [make_lead(3, marker="NOMATCH")])

    calls = latest(api_client, limit=10)

    assert len(calls) == 4
    ids = [c["provider_call_id"] for c in calls]
    assert ids == sorted(ids, reverse=True)
    assert ids == list(ProviderCall.objects.order_by("-id").values_list("id", flat=True))
    for call in calls:
        assert CALL_KEYS <= set(call)
        assert call["run_id"] == run_id
        assert call["state"] == "completed"
        assert call["status_code"] == 200
        assert call["match_count"] == 3  # the provider's meta.results.matchCount for the request
        assert call["attempt_reason"] == "primary"
        assert call["request"]["propertyAddress"]["city"] == "DENVER"
        assert isinstance(call["response"], dict)
        dt.datetime.fromisoformat(call["created_at"])
    by_lead = {c["lead_id"]: c for c in calls}
    assert set(by_lead) == {"D-0000", "D-0001", "D-0002", "D-0003"}
    assert by_lead["D-0000"]["cost_cents"] == 7
    assert by_lead["D-0003"]["cost_cents"] == 0


def test_limit_n_returns_the_n_newest_calls(api_client, sandbox):
    run_leads(api_client, [make_lead(i) for i in range(5)])
    newest = list(ProviderCall.objects.order_by("-id").values_list("id", flat=True))

    assert [c["provider_call_id"] for c in latest(api_client, limit=1)] == newest[:1]
    assert [c["provider_call_id"] for c in latest(api_client, limit=3)] == newest[:3]
    assert len(latest(api_client, limit=100)) == 5


def test_default_limit_is_ten_and_an_empty_log_is_an_empty_list(api_client, sandbox):
    assert latest(api_client) == []

    run_leads(api_client, [make_lead(i) for i in range(12)])

    assert len(latest(api_client)) == 10


def test_debug_output_has_no_full_phone_email_or_provider_token(api_client, sandbox):
    run_leads(api_client, [make_lead(i) for i in range(3)])
    contacts = [api_client.get(f"/api/leads/D-{i:04d}/contacts").json() for i in range(3)]
    numbers = [p["number"] for c in contacts for p in c["phones"]]
    emails = [e["address"] for c in contacts for e in c["emails"]]
    assert numbers and emails

    text = api_client.get(URL, {"limit": 100}).content.decode()

    for number in numbers:
        assert number not in text
        assert number[2:] not in text  # the provider's own 10-digit form
    for address in emails:
        assert address not in text.lower()
    assert PROVIDER_TOKEN not in text
    assert "matchCount" in text or '"match_count": 3' in text
    assert re.search(r"\*\*\*", text), "phones/emails should be shown masked"


def test_a_call_whose_answer_never_came_back_says_lost(api_client, sandbox):
    sandbox.update_config(fault="reset")  # the connection drops after the request was sent
    run_leads(api_client, [make_lead(0)])

    (call,) = latest(api_client, limit=1)

    assert call["state"] == "lost"
    assert call["lead_id"] == "D-0000"
    assert call["status_code"] is None
    assert call["response"] is None
    assert call["cost_cents"] == 7  # costed at its estimate: it may have been billed


def test_auth_failure_at_the_provider_shows_status_and_no_token(api_client, sandbox):
    sandbox.update_config(fault="401")
    run_leads(api_client, [make_lead(0)])

    response = api_client.get(URL, {"limit": 1})

    (call,) = response.json()["calls"]
    assert call["state"] == "errored"
    assert call["status_code"] == 401
    assert call["cost_cents"] == 0
    assert PROVIDER_TOKEN not in response.content.decode()
    assert PROVIDER_TOKEN not in json.dumps(call["request"])


@pytest.mark.parametrize("limit", ["0", "abc", "-1", "101", "1.5"])
def test_bad_limit_is_400_validation_error(api_client, limit):
    response = api_client.get(URL, {"limit": limit})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == "ValidationError"
    assert "limit" in body["fields"]


def test_debug_needs_the_admin_token_and_get_only(anon_client, api_client):
    assert anon_client.get(URL).status_code == 401
    response = api_client.post(URL)
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"
