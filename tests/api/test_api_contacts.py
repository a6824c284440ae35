"""GET /api/leads/<lead_id>/contacts: the seed's contacts shape, with the Cached badge."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.conf import settings as django_settings

from skiptrace import service
from tests.helpers import run_leads

pytestmark = pytest.mark.django_db

ON_POSTGRES = "postgresql" in django_settings.DATABASES["default"]["ENGINE"]
E164 = re.compile(r"\+1[2-9]\d{2}[2-9]\d{6}")
PHONE_TYPES = {"Mobile", "Land Line", "Unknown"}


def make_lead(n: int, marker: str = "ALWAYSMATCH", **overrides) -> dict:
    lead = {
        "lead_id": f"C-{n:04d}", "first_name": "Terrence", "last_name": "Clark",
        "street": f"{700 + n} {marker} Ave", "city": "Orlando", "state": "FL", "zip": "32801",
    }
    lead.update(overrides)
    return lead


def contacts(client, lead_id: str):
    return client.get(f"/api/leads/{lead_id}/contacts")


def parse_iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_contacts_have_the_seed_shape_with_e164_numbers(api_client, sandbox):
    before = dt.datetime.now(dt.UTC)
    run_leads(api_client, [make_lead(1)])

    response = contacts(api_client, "C-0001")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["leadId"] == "C-0001"
    assert body["cached"] is False
    assert parse_iso(body["updatedAt"]) >= before - dt.timedelta(seconds=1)
    assert body["phones"] and body["emails"]
    for phone in body["phones"]:
        assert {"number", "type", "isDoNotCall", "confidence", "source"} <= set(phone)
        assert E164.fullmatch(phone["number"]), phone["number"]
        assert phone["type"] in PHONE_TYPES
        assert isinstance(phone["isDoNotCall"], bool)
        assert phone["confidence"] is None or (isinstance(phone["confidence"], int) and 0 <= phone["confidence"] <= 100)
        assert phone["source"] == "batchdata"
    for email in body["emails"]:
        assert {"address", "isPrimary", "confidence", "source"} <= set(email)
        assert "@" in email["address"]
        assert isinstance(email["isPrimary"], bool)
        assert email["confidence"] is None or isinstance(email["confidence"], int)
        assert email["source"] == "batchdata"
    assert [e["isPrimary"] for e in body["emails"]].count(True) == 1
    mobile = body["phones"][0]
    assert mobile["type"] == "Mobile" and mobile["isDoNotCall"] is False


def test_each_phone_says_whose_it_is_and_whether_it_may_be_dialed(api_client, sandbox):
    run_leads(api_client, [make_lead(7)])

    body = contacts(api_client, "C-0007").json()

    assert body["phones"] and body["emails"]
    for phone in body["phones"]:
        assert {"rank", "carrier", "tested", "reachable", "person", "callable"} <= set(phone)
        assert phone["rank"] is None or isinstance(phone["rank"], int)
        assert phone["carrier"] is None or isinstance(phone["carrier"], str)
        assert phone["tested"] in (None, True, False) and phone["reachable"] in (None, True, False)
        person = phone["person"]
        assert person is None or set(person) == {"name", "propertyOwner", "litigator", "deceased"}
        barred = bool(person and (person["litigator"] or person["deceased"]))
        assert phone["callable"] is not (phone["isDoNotCall"] or phone["isTcpa"] or barred)
    for email in body["emails"]:
        assert {"rank", "tested", "person"} <= set(email)
        assert email["person"] is None or set(email["person"]) == {"name", "propertyOwner"}


def test_contacts_agree_with_the_run_report_sample(api_client, sandbox):
    run_id = run_leads(api_client, [make_lead(2)])
    sample = api_client.get(f"/api/skiptrace-runs/{run_id}/report").json()["samples"]["enriched"][0]

    body = contacts(api_client, "C-0002").json()

    assert sample["lead_id"] == "C-0002"
    assert [p["number"] for p in body["phones"]] == sample["phones"]
    assert [e["address"] for e in body["emails"]] == sample["emails"]


def test_cached_badge_turns_on_after_a_cached_re_run(api_client, sandbox):
    run_leads(api_client, [make_lead(3)])
    first = contacts(api_client, "C-0003").json()
    service.L1.clear()

    run_leads(api_client, [make_lead(3)])

    second = contacts(api_client, "C-0003").json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["phones"] == first["phones"] and second["emails"] == first["emails"]
    assert parse_iso(second["updatedAt"]) >= parse_iso(first["updatedAt"])
    assert sandbox.stats.snapshot()["items"] == 1


def test_cached_badge_also_shows_after_a_cached_single_lead_call(api_client, sandbox):
    lead = make_lead(4)
    fresh = api_client.post_json("/api/skiptrace", {"lead": lead}).json()
    assert contacts(api_client, "C-0004").json()["cached"] is False

    api_client.post_json("/api/skiptrace", {"lead": lead})

    body = contacts(api_client, "C-0004").json()
    assert body["cached"] is True
    assert [p["number"] for p in body["phones"]] == [p["number"] for p in fresh["phones"]]


def test_unmatched_lead_has_empty_contact_lists(api_client, sandbox):
    run_leads(api_client, [make_lead(5, marker="NOMATCH")])

    response = contacts(api_client, "C-0005")

    assert response.status_code == 200
    body = response.json()
    assert body["leadId"] == "C-0005"
    assert body["phones"] == [] and body["emails"] == []
    assert body["updatedAt"] is not None


def test_unknown_lead_is_404_json(api_client):
    response = contacts(api_client, "no-such-lead")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "NotFound"
    assert "no-such-lead" in response.json()["detail"]


def test_lead_that_failed_validation_has_no_contacts_page(api_client, sandbox):
    run_leads(api_client, [make_lead(6, street="")])

    assert contacts(api_client, "C-0006").status_code == 404


def test_contacts_need_the_admin_token_and_get_only(anon_client, api_client):
    assert anon_client.get("/api/leads/C-0001/contacts").status_code == 401
    response = api_client.post("/api/leads/C-0001/contacts")
    assert response.status_code == 405
    assert response.json()["error"] == "MethodNotAllowed"


def test_lead_id_with_a_nul_character_is_404_not_500(api_client):
    response = contacts(api_client, "%00")

    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"
