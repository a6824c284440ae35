"""POST /api/skiptrace: one lead now, through the same money path as runs, against the loopback sandbox."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from skiptrace.models import GuardState, ProviderCall, Run
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

URL = "/api/skiptrace"
LEAD = {
    "lead_id": "S-0001", "first_name": "Maria", "last_name": "Garcia",
    "street": "4410 Alwaysmatch Hollow Dr", "city": "Tampa", "state": "FL", "zip": "33610",
}


def open_breaker(minutes: float = 5) -> None:
    now = dt.datetime.now(dt.UTC)
    GuardState.objects.update_or_create(
        name="breaker", defaults={"state": "open", "opened_at": now, "next_probe_at": now + dt.timedelta(minutes=minutes)}
    )


def test_one_lead_returns_its_contacts_with_provenance(api_client, sandbox):
    response = api_client.post_json(URL, {"lead": LEAD})

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["lead_id"] == "S-0001"
    assert body["cached"] is False
    assert re.fullmatch(r"[0-9a-f]{64}", body["payload_hash"])
    assert len(body["provider_call_ids"]) == 1
    call = ProviderCall.objects.get(pk=body["provider_call_ids"][0])
    assert (call.lead_id, call.state, call.payload_hash) == ("S-0001", "completed", body["payload_hash"])
    assert body["phones"] and body["emails"]
    first = body["phones"][0]
    assert re.fullmatch(r"\+1\d{10}", first["number"])
    assert first["type"] == "Mobile" and first["isDoNotCall"] is False
    assert all("@" in e["address"] for e in body["emails"])
    assert sandbox.stats.snapshot()["items"] == 1


def test_same_lead_again_is_cached_and_the_provider_saw_exactly_one_item(api_client, sandbox):
    first = api_client.post_json(URL, {"lead": LEAD}).json()

    second = api_client.post_json(URL, {"lead": LEAD})

    assert second.status_code == 200
    body = second.json()
    assert body["cached"] is True
    assert body["payload_hash"] == first["payload_hash"]
    assert body["provider_call_ids"] == first["provider_call_ids"]
    assert body["phones"] == first["phones"] and body["emails"] == first["emails"]
    stats = sandbox.stats.snapshot()
    assert (stats["requests"], stats["items"]) == (1, 1)
    assert ProviderCall.objects.count() == 1


def test_another_spelling_of_the_same_lead_is_served_from_cache(api_client, sandbox):
    api_client.post_json(URL, {"lead": LEAD})
    respelled = {**LEAD, "lead_id": "S-0002", "first_name": " maria ", "street": "4410 alwaysmatch hollow drive.",
                 "city": "TAMPA", "state": "fl", "zip": "33610-4321"}

    body = api_client.post_json(URL, {"lead": respelled}).json()

    assert body["lead_id"] == "S-0002"
    assert body["cached"] is True
    assert sandbox.stats.snapshot()["items"] == 1


def test_force_policy_fetches_again_even_when_cached(api_client, sandbox):
    first = api_client.post_json(URL, {"lead": LEAD}).json()

    body = api_client.post_json(URL, {"lead": LEAD, "policy": {"force": True}}).json()

    assert body["cached"] is False
    assert body["provider_call_ids"] != first["provider_call_ids"]
    assert sandbox.stats.snapshot()["items"] == 2


def test_unmatched_lead_is_200_with_empty_contacts_and_costs_nothing(api_client, sandbox):
    body = api_client.post_json(URL, {"lead": {**LEAD, "street": "12 Nomatch Ln"}}).json()

    assert body["cached"] is False
    assert body["phones"] == [] and body["emails"] == []
    assert ProviderCall.objects.get().cost_cents == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lead": {**LEAD, "street": ""}}, "lead"),
        ({"lead": {k: v for k, v in LEAD.items() if k != "street"}}, "lead"),
        ({"lead": {**LEAD, "zip": "", "state": ""}}, "lead"),
        ({"lead": {**LEAD, "zip": 33610}}, "lead.zip"),
        ({"lead": {**LEAD, "street": ["4410 Oak"]}}, "lead.street"),
        ({"lead": {**LEAD, "first_name": False}}, "lead.first_name"),
        ({"lead": {**LEAD, "lead_id": 1}}, "lead.lead_id"),
        ({"lead": [LEAD]}, "lead"),
        ({"lead": "4410 Oak Hollow Dr"}, "lead"),
        ({"leads": [LEAD]}, "lead"),
        ({"lead": LEAD, "policy": {"force": "true"}}, "policy.force"),
        ({"lead": LEAD, "policy": {"fallback": 0}}, "policy.fallback"),
        ("lead=4410", "body"),
        ("[1, 2]", "body"),
    ],
)
def test_bad_lead_is_400_validation_error_and_the_provider_sees_nothing(api_client, sandbox, body, field):
    response = api_client.post_json(URL, body)

    error = assert_error(response, 400, "ValidationError")
    assert field in error["fields"], error
    assert sandbox.stats.snapshot()["requests"] == 0
    assert ProviderCall.objects.count() == 0


def test_budget_spent_is_429_budget_pause_and_nothing_is_sent(api_client, sandbox, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0

    response = api_client.post_json(URL, {"lead": LEAD})

    body = assert_error(response, 429, "BudgetPause")
    assert body["reason"] == "daily_budget"
    assert isinstance(body["retry_after"], int) and body["retry_after"] > 0
    assert response["Retry-After"] == str(body["retry_after"])
    assert sandbox.stats.snapshot()["requests"] == 0
    assert Run.objects.count() == 0 and ProviderCall.objects.count() == 0


def test_cached_lead_is_still_served_when_the_budget_is_spent_or_the_circuit_is_open(api_client, sandbox, settings):
    first = api_client.post_json(URL, {"lead": LEAD}).json()
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 0
    open_breaker()

    response = api_client.post_json(URL, {"lead": LEAD})

    assert response.status_code == 200, response.content
    assert response.json()["cached"] is True
    assert response.json()["phones"] == first["phones"]
    assert sandbox.stats.snapshot()["items"] == 1


def test_open_circuit_is_503_circuit_open_with_retry_after(api_client, sandbox):
    open_breaker(minutes=5)

    response = api_client.post_json(URL, {"lead": LEAD})

    body = assert_error(response, 503, "CircuitOpen")
    assert isinstance(body["retry_after"], int)
    assert 250 <= body["retry_after"] <= 301
    assert response["Retry-After"] == str(body["retry_after"])
    assert sandbox.stats.snapshot()["requests"] == 0
    assert ProviderCall.objects.count() == 0


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_wrong_method_is_405_json(api_client, method):
    response = getattr(api_client, method)(URL)

    assert_error(response, 405, "MethodNotAllowed")
    assert "POST" in response["Allow"]


def test_missing_token_is_401_and_nothing_is_sent(anon_client, sandbox):
    assert_error(anon_client.post_json(URL, {"lead": LEAD}), 401, "Unauthorized")
    assert sandbox.stats.snapshot()["requests"] == 0


def test_lone_surrogate_in_the_lead_is_400_not_500(api_client, sandbox):
    body = '{"lead": {"lead_id": "S-1", "street": "4410 Oak\\ud800 Hollow Dr", "zip": "33610"}}'

    assert_error(api_client.post_json(URL, body), 400, "ValidationError")
    assert sandbox.stats.snapshot()["requests"] == 0
