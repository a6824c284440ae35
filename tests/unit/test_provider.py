"""BatchData v1 client: body, parsing, error mapping, masking. No network: `responses` mocks the
one HTTP seam; a few tests use a socket on 127.0.0.1 to prove how real connection failures map."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests
import responses
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from skiptrace import provider as p
from skiptrace.provider import (
    BatchDataClient,
    ProviderError,
    TraceRequest,
    TraceResult,
    mask_email,
    mask_phone,
    parse_response,
    sanitize_for_debug,
)

# BatchData V1 examples (fixtures/batchdata/*.json; V3 in fixtures/batchdata/v3/).
DATA_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "batchdata"
needs_examples = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"{DATA_DIR} not present")

BASE_URL = "https://api.batchdata.test"
PATH = "/api/v1/property/skip-trace"
URL = BASE_URL + PATH
TOKEN = "tok_LIVE_9f8e7d6c5b4a3210secret"


def load_example(name: str) -> dict:
    return json.loads((DATA_DIR / name).read_text())


def requests_from_example(body: dict) -> list[TraceRequest]:
    out = []
    for r in body["requests"]:
        a, n = r["propertyAddress"], r.get("name", {})
        out.append(
            TraceRequest(
                request_id=r["requestId"],
                street=a.get("street", ""),
                city=a.get("city", ""),
                state=a.get("state", ""),
                zip=a.get("zip", ""),
                first=n.get("first", ""),
                last=n.get("last", ""),
            )
        )
    return out


def req(rid: str = "L1", street: str = "4410 OAK HOLLOW DR", zip_: str = "33610", **kw: str) -> TraceRequest:
    return TraceRequest(
        request_id=rid,
        street=street,
        city=kw.get("city", "TAMPA"),
        state=kw.get("state", "FL"),
        zip=zip_,
        first=kw.get("first", ""),
        last=kw.get("last", ""),
    )


def person(**kw: object) -> dict:
    base: dict = {
        "_id": "x1",
        "name": {"first": "a", "last": "b"},
        "phoneNumbers": [],
        "emails": [],
        "propertyAddress": {"street": "4410 Oak Hollow Dr", "zip": "33610"},
        "meta": {"matched": True, "error": False},
    }
    base.update(kw)
    return base


def answer(*persons: dict, match_count: int | None = None) -> dict:
    counts = {"requestCount": len(persons)}
    if match_count is not None:
        counts["matchCount"] = match_count
    return {
        "status": {"code": 200, "text": "OK"},
        "results": {"persons": list(persons), "meta": {"results": counts, "requestId": "prov-1"}},
    }


def parse_one(pers: dict, request: TraceRequest | None = None) -> TraceResult:
    results, _, _ = parse_response(answer(pers), [request or req()])
    return results[0]


@pytest.fixture(autouse=True)
def _product_settings() -> None:
    """Overrides conftest's Django-settings fixture: this module needs no Django (it also runs
    with ``-p no:django``), and the client under test is always built explicitly."""


@pytest.fixture
def client() -> BatchDataClient:
    return BatchDataClient(base_url=BASE_URL + "/", path=PATH, token=TOKEN, timeout=30.0)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def drift(body: object, requests_: list[TraceRequest]) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        parse_response(body, requests_)
    assert info.value.kind == "unreadable"
    assert info.value.maybe_sent is True
    assert info.value.status_code == 200
    return info.value


# ---------------------------------------------------------------- the example files


@needs_examples
def test_it_builds_exactly_the_example_request_body(client: BatchDataClient) -> None:
    example = load_example("request_batch.json")
    assert client.build_body(requests_from_example(example)) == example


@needs_examples
def test_it_maps_the_example_response_by_position() -> None:
    reqs = requests_from_example(load_example("request_batch.json"))
    results, match_count, provider_request_id = parse_response(load_example("response_batch.json"), reqs)

    assert [r.request_id for r in results] == ["L00001", "L00002", "L00003"]
    assert match_count == 2
    assert provider_request_id == "7hQmB2xZ0pLrT4c"
    denise, owen, harold = results
    assert denise.matched and not owen.matched and harold.matched
    assert [ph.number for ph in denise.phones] == ["+18135550142", "+18135550199", "+18135550107"]
    assert [e.address for e in denise.emails] == ["d.alvarez@example.com", "denise.a@example.net"]
    assert owen.phones == () and owen.emails == ()
    assert harold.litigator and harold.phones == ()
    assert [e.address for e in harold.emails] == ["hkim@example.org"]


@needs_examples
def test_it_keeps_the_example_phone_flags_and_scores() -> None:
    reqs = requests_from_example(load_example("request_batch.json"))
    denise = parse_response(load_example("response_batch.json"), reqs)[0][0]
    assert [(ph.type, ph.is_dnc, ph.is_tcpa, ph.confidence) for ph in denise.phones] == [
        ("Mobile", False, False, 96),
        ("Mobile", True, False, 71),
        ("Land Line", False, True, 40),
    ]


@needs_examples
def test_it_sends_the_example_batch_and_returns_a_batch_result(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, json=load_example("response_batch.json"), status=200)
    reqs = requests_from_example(load_example("request_batch.json"))

    result = client.skip_trace(reqs)

    assert result.status_code == 200
    assert result.match_count == 2
    assert result.provider_request_id == "7hQmB2xZ0pLrT4c"
    assert len(result.results) == 3
    assert result.elapsed_s >= 0
    assert json.loads(result.request_json) == load_example("request_batch.json")
    assert rsps.calls[0].request.body == result.request_json.encode()


@needs_examples
def test_it_maps_the_example_400_body_to_http_4xx_with_the_provider_text(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, json=load_example("response_error_400.json"), status=400)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    err = info.value
    assert (err.kind, err.status_code, err.maybe_sent, err.transient) == ("http_4xx", 400, True, False)
    assert err.detail == "The requests field is required"


@needs_examples
def test_it_maps_the_example_401_body_to_auth(client: BatchDataClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, URL, json=load_example("response_error_401.json"), status=401)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert (info.value.kind, info.value.detail, info.value.transient) == ("auth", "Unauthorized", False)


# ---------------------------------------------------------------- request body


def test_it_omits_the_name_for_an_entity_owner(client: BatchDataClient) -> None:
    body = client.build_body([req(first="", last="")])
    assert "name" not in body["requests"][0]


def test_it_sends_the_name_when_there_is_one(client: BatchDataClient) -> None:
    body = client.build_body([req(first="DENISE", last="ALVAREZ"), req("L2", last="PRICE")])
    assert body["requests"][0]["name"] == {"first": "DENISE", "last": "ALVAREZ"}
    assert body["requests"][1]["name"] == {"last": "PRICE"}


def test_it_always_asks_for_tcpa_blacklisted_phones(client: BatchDataClient) -> None:
    assert client.build_body([req()])["options"] == {"includeTCPABlacklistedPhones": True}


def test_it_omits_empty_address_fields(client: BatchDataClient) -> None:
    body = client.build_body([req(zip_="", city="TAMPA", state="FL"), req("L2", city="", state="")])
    assert body["requests"][0] == {
        "requestId": "L1",
        "propertyAddress": {"street": "4410 OAK HOLLOW DR", "city": "TAMPA", "state": "FL"},
    }
    assert body["requests"][1]["propertyAddress"] == {"street": "4410 OAK HOLLOW DR", "zip": "33610"}


@pytest.mark.parametrize(
    "bad",
    [
        req(street=""),
        req(zip_="", city="", state="FL"),
        req(rid=""),
    ],
    ids=["no-street", "no-zip-no-city", "no-request-id"],
)
def test_it_refuses_a_request_the_provider_would_reject_without_sending(
    client: BatchDataClient, rsps: responses.RequestsMock, bad: TraceRequest
) -> None:
    rsps.add(responses.POST, URL, json={}, status=200)
    with pytest.raises(ValueError):
        client.skip_trace([bad])
    assert len(rsps.calls) == 0


def test_it_refuses_duplicate_request_ids_in_one_batch(client: BatchDataClient) -> None:
    with pytest.raises(ValueError, match="repeats"):
        client.build_body([req("L1"), req("L1")])


@pytest.mark.parametrize("count", [0, 101])
def test_it_refuses_batches_outside_1_to_100(
    client: BatchDataClient, rsps: responses.RequestsMock, count: int
) -> None:
    with pytest.raises(ValueError):
        client.skip_trace([req(f"L{i}") for i in range(count)])
    assert len(rsps.calls) == 0


def test_it_accepts_a_full_batch_of_100(client: BatchDataClient, rsps: responses.RequestsMock) -> None:
    reqs = [req(f"L{i}") for i in range(100)]
    rsps.add(responses.POST, URL, json=answer(*[person() for _ in reqs], match_count=100))
    assert len(client.skip_trace(reqs).results) == 100


# ---------------------------------------------------------------- HTTP request shape


def test_it_sends_the_exact_bearer_header_and_json_headers(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, json=answer(person(), match_count=1))
    client.skip_trace([req()])
    sent = rsps.calls[0].request
    assert sent.url == URL
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Accept"] == "application/json"
    assert "X-API-Key" not in sent.headers


def test_it_sends_x_api_key_when_configured_so(rsps: responses.RequestsMock) -> None:
    c = BatchDataClient(base_url=BASE_URL, path=PATH, token=TOKEN, auth_style="x-api-key")
    rsps.add(responses.POST, URL, json=answer(person(), match_count=1))
    c.skip_trace([req()])
    sent = rsps.calls[0].request
    assert sent.headers["X-API-Key"] == TOKEN
    assert "Authorization" not in sent.headers


def test_it_refuses_an_unknown_auth_style() -> None:
    with pytest.raises(ValueError):
        BatchDataClient(base_url=BASE_URL, path=PATH, token=TOKEN, auth_style="basic")


def test_it_uses_a_short_connect_timeout_and_the_configured_read_timeout(
    rsps: responses.RequestsMock,
) -> None:
    rsps.add(responses.POST, URL, json=answer(person(), match_count=1))
    BatchDataClient(base_url=BASE_URL, path=PATH, token=TOKEN, timeout=30).skip_trace([req()])
    BatchDataClient(base_url=BASE_URL, path=PATH, token=TOKEN, timeout=2).skip_trace([req()])
    assert rsps.calls[0].request.req_kwargs["timeout"] == (5.0, 30.0)
    assert rsps.calls[1].request.req_kwargs["timeout"] == (2.0, 2.0)


def test_its_own_session_never_retries() -> None:
    c = BatchDataClient(base_url=BASE_URL, path=PATH, token=TOKEN)
    for prefix in ("https://", "http://"):
        retries = c._session.get_adapter(prefix + "x").max_retries
        assert retries.total == 0 and retries.read is False


def test_it_does_not_follow_a_redirect(client: BatchDataClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, URL, status=307, headers={"Location": "https://elsewhere.test/x"})
    rsps.add(responses.POST, "https://elsewhere.test/x", json=answer(person(), match_count=1))
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert (info.value.kind, info.value.status_code) == ("http_4xx", 307)
    assert len(rsps.calls) == 1


def test_it_makes_no_http_request_without_a_token(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, URL, json=answer(person(), match_count=1))
    c = BatchDataClient(base_url=BASE_URL, path=PATH, token="  ")
    assert not c.configured
    with pytest.raises(ProviderError) as info:
        c.skip_trace([req()])
    assert (info.value.kind, info.value.maybe_sent) == ("auth", False)
    assert len(rsps.calls) == 0


def test_it_reports_url_configured_and_masked_auth(client: BatchDataClient) -> None:
    assert client.url == URL
    assert client.configured
    assert client.masked_auth == "Bearer tok_****"
    assert TOKEN[4:8] not in client.masked_auth
    assert BatchDataClient(base_url=BASE_URL, path=PATH, token=None).masked_auth == "(no token)"
    assert BatchDataClient(base_url=BASE_URL, path=PATH, token="short").masked_auth == "Bearer ****"


def test_from_settings_reads_django_settings_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_settings = types.SimpleNamespace(
        BATCHDATA_BASE_URL="http://127.0.0.1:9999/",
        BATCHDATA_SKIPTRACE_PATH=PATH,
        BATCHDATA_AUTH_STYLE="bearer",
        BATCHDATA_API_TOKEN=TOKEN,
    )  # no PROVIDER_TIMEOUT_S: defaults to 30
    fake_conf = types.ModuleType("django.conf")
    fake_conf.settings = fake_settings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "django.conf", fake_conf)

    c = BatchDataClient.from_settings()

    assert c.url == "http://127.0.0.1:9999" + PATH
    assert c.configured
    assert c.timeout == 30.0


def test_the_module_imports_without_django() -> None:
    code = "import sys, skiptrace.provider; assert 'django' not in sys.modules, 'django imported'"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()


# ---------------------------------------------------------------- parsing: phones and emails


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("8135550142", "+18135550142"),
        ("(813) 555-0142", "+18135550142"),
        ("1-813-555-0142", "+18135550142"),
        ("+18135550142", "+18135550142"),
        (8135550142, "+18135550142"),
    ],
)
def test_it_turns_provider_numbers_into_e164(raw: object, expected: str) -> None:
    result = parse_one(person(phoneNumbers=[{"number": raw, "type": "Mobile"}]))
    assert [ph.number for ph in result.phones] == [expected]


@pytest.mark.parametrize("raw", ["5550142", "28135550142", "0135550142", "8131550142", "", None, "n/a"])
def test_it_skips_numbers_that_are_not_us_numbers_without_failing_the_batch(raw: object) -> None:
    result = parse_one(
        person(phoneNumbers=[{"number": raw}, {"number": "8135550142"}], emails=[{"email": "a@b.com"}])
    )
    assert [ph.number for ph in result.phones] == ["+18135550142"]


def test_it_maps_dnc_tcpa_and_score_with_safe_defaults() -> None:
    result = parse_one(
        person(
            phoneNumbers=[
                {"number": "8135550101", "dnc": True, "tcpa": False, "score": 88},
                {"number": "8135550102"},
                {"number": "8135550103", "score": 150, "tcpa": True},
                {"number": "8135550104", "score": -4},
                {"number": "8135550105", "score": "71.6", "dnc": "yes"},
            ]
        )
    )
    assert [(ph.is_dnc, ph.is_tcpa, ph.confidence) for ph in result.phones] == [
        (True, False, 88),
        (False, False, None),
        (False, True, 100),
        (False, False, 0),
        (True, False, 72),
    ]


@pytest.mark.parametrize(
    "provider_type,expected",
    [
        ("Mobile", "Mobile"),
        ("Land Line", "Land Line"),
        ("Landline", "Land Line"),
        ("land line", "Land Line"),
        ("Wireless", "Mobile"),
        ("VoIP", "VoIP"),
        (None, "Unknown"),
    ],
)
def test_it_normalizes_phone_types(provider_type: str | None, expected: str) -> None:
    result = parse_one(person(phoneNumbers=[{"number": "8135550142", "type": provider_type}]))
    assert result.phones[0].type == expected


def test_it_keeps_provider_order_and_deduplicates_phones_keeping_any_dnc_flag() -> None:
    result = parse_one(
        person(
            phoneNumbers=[
                {"number": "8135550142", "type": "Mobile", "score": 90},
                {"number": "8135550150", "type": "Land Line"},
                {"number": "+1 813 555 0142", "type": "Mobile", "dnc": True},
            ]
        )
    )
    assert [(ph.number, ph.is_dnc, ph.confidence) for ph in result.phones] == [
        ("+18135550142", True, 90),
        ("+18135550150", False, None),
    ]


def test_it_reads_the_address_email_variant_lowercases_dedupes_and_marks_the_first_primary() -> None:
    result = parse_one(
        person(
            emails=[
                {"address": " Owner@Example.COM "},
                {"email": "owner@example.com"},
                {"email": "not-an-email"},
                {"email": "second@example.net"},
            ]
        )
    )
    assert [(e.address, e.is_primary) for e in result.emails] == [
        ("owner@example.com", True),
        ("second@example.net", False),
    ]


def test_a_litigators_phones_are_kept_and_name_the_litigator_person() -> None:
    # Kept, so that a dialer export can list them flagged; the dialer never calls them (tests/unit/test_dialer.py).
    result = parse_one(
        person(litigator=True, phoneNumbers=[{"number": "8135550142"}], emails=[{"email": "x@example.com"}])
    )
    assert result.litigator and result.matched
    assert [p.number for p in result.phones] == ["+18135550142"]
    assert result.phones[0].person == 0 and result.persons[0].litigator
    assert [e.address for e in result.emails] == ["x@example.com"]


def test_an_unmatched_person_has_no_contacts_even_if_some_came_back() -> None:
    result = parse_one(
        person(
            meta={"matched": False}, phoneNumbers=[{"number": "8135550142"}], emails=[{"email": "x@y.com"}]
        )
    )
    assert not result.matched
    assert result.phones == () and result.emails == ()


def test_matched_is_inferred_when_meta_is_missing() -> None:
    found = person(meta=None)
    del found["meta"]
    empty = {"propertyAddress": {"street": "4410 OAK HOLLOW DR", "zip": "33610"}}
    assert parse_one(found).matched is True
    assert parse_one(empty).matched is False


def test_match_count_falls_back_to_counted_matches_when_the_provider_omits_it() -> None:
    _, match_count, _ = parse_response(
        answer(person(), person(meta={"matched": False})), [req("L1"), req("L2")]
    )
    assert match_count == 1


def test_payload_hash_is_sha256_of_the_canonical_raw_person() -> None:
    pers = person(phoneNumbers=[{"number": "8135550142"}])
    result = parse_one(pers)
    canonical = json.dumps(pers, sort_keys=True, separators=(",", ":"))
    assert result.raw == pers
    assert result.payload_hash == hashlib.sha256(canonical.encode()).hexdigest()


def test_contacts_round_trip_through_the_cache_shape() -> None:
    result = parse_one(
        person(
            phoneNumbers=[{"number": "8135550142", "type": "Mobile", "dnc": True, "tcpa": True, "score": 9}],
            emails=[{"email": "x@example.com"}],
        )
    )
    contacts = result.to_contacts()
    assert contacts["phones"] == [
        {"number": "+18135550142", "type": "Mobile", "isDoNotCall": True, "isTcpa": True, "confidence": 9,
         "rank": None, "carrier": None, "tested": None, "reachable": None, "person": 0}
    ]
    assert contacts["emails"] == [{"address": "x@example.com", "isPrimary": True, "confidence": None,
                                   "rank": None, "tested": None, "person": 0}]
    assert [p["litigator"] for p in contacts["persons"]] == [False]
    assert (contacts["matched"], contacts["litigator"]) == (True, False)
    back = TraceResult.from_contacts(result.request_id, json.loads(json.dumps(contacts)), result.payload_hash)
    assert back == result
    assert back.raw == {}


# ---------------------------------------------------------------- parsing: schema drift


def test_fewer_persons_than_requests_is_unreadable() -> None:
    drift(answer(person()), [req("L1"), req("L2")])


def test_a_zip_that_does_not_match_the_request_is_unreadable() -> None:
    err = drift(answer(person(propertyAddress={"street": "4410 Oak Hollow Dr", "zip": "21224"})), [req()])
    assert "zip" in err.detail


def test_a_house_number_that_does_not_match_the_request_is_unreadable() -> None:
    drift(answer(person(propertyAddress={"houseNumber": "77", "street": "4410 Oak Hollow Dr"})), [req()])
    drift(answer(person(propertyAddress={"street": "77 Bayview Ter", "zip": "33610"})), [req()])


def test_swapped_persons_never_hand_one_leads_phones_to_another() -> None:
    a = req("L1", street="4410 OAK HOLLOW DR", zip_="33610")
    b = req("L2", street="77 BAYVIEW TER", zip_="21224")
    pa = person(propertyAddress={"street": "4410 Oak Hollow Dr", "zip": "33610"})
    pb = person(propertyAddress={"street": "77 Bayview Ter", "zip": "21224"})
    assert len(parse_response(answer(pa, pb), [a, b])[0]) == 2
    drift(answer(pb, pa), [a, b])


def test_a_different_request_id_echo_is_unreadable() -> None:
    drift(answer(person(requestId="L9")), [req("L1")])


def test_zip_plus_four_and_lost_leading_zeros_still_match() -> None:
    r = req(street="12 ELM ST", zip_="02122")
    assert parse_one(person(propertyAddress={"street": "12 Elm St", "zip": 2122}), r).matched
    assert parse_one(person(propertyAddress={"street": "12 Elm St", "zip": "02122-4021"}), r).matched


@pytest.mark.parametrize(
    "body",
    [
        [],
        "OK",
        {"status": {"code": 200}},
        {"results": {"meta": {}}},
        {"results": {"persons": {"0": {}}}},
        {"results": {"persons": ["not a person"]}},
        {"results": {"persons": [{"phoneNumbers": {"number": "8135550142"}}]}},
        {"results": {"persons": [{"emails": "x@example.com"}]}},
        {"results": {"persons": [{"meta": {"matched": "maybe"}}]}},
        {"results": {"persons": [{}], "meta": {"results": {"matchCount": "1"}}}},
    ],
    ids=[
        "list-body",
        "string-body",
        "no-results",
        "no-persons",
        "persons-not-list",
        "person-not-object",
        "phones-not-list",
        "emails-not-list",
        "matched-not-bool",
        "match-count-not-int",
    ],
)
def test_shapes_that_do_not_fit_are_unreadable(body: object) -> None:
    drift(body, [req()])


def test_a_non_json_200_is_unreadable_that_may_have_been_billed(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, body="<html>gateway</html>", status=200, content_type="text/html")
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert (info.value.kind, info.value.status_code, info.value.maybe_sent) == ("unreadable", 200, True)
    assert not info.value.transient


# ---------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    "status,kind,transient",
    [
        (400, "http_4xx", False),
        (401, "auth", False),
        (402, "out_of_credits", False),
        (403, "auth", False),
        (404, "http_4xx", False),
        (429, "rate_limited", True),
        (500, "http_5xx", True),
        (503, "http_5xx", True),
    ],
)
def test_http_statuses_map_to_error_kinds(
    client: BatchDataClient, rsps: responses.RequestsMock, status: int, kind: str, transient: bool
) -> None:
    rsps.add(responses.POST, URL, json={"status": {"code": status, "text": "nope"}}, status=status)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    err = info.value
    assert (err.kind, err.status_code, err.transient, err.maybe_sent) == (kind, status, transient, True)
    assert err.detail == "nope"


def test_429_carries_retry_after_seconds(client: BatchDataClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, URL, json={"message": "slow down"}, status=429, headers={"Retry-After": "12"})
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert (info.value.kind, info.value.retry_after, info.value.detail) == ("rate_limited", 12.0, "slow down")


def test_429_without_retry_after_has_none(client: BatchDataClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, URL, json={}, status=429)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert info.value.retry_after is None


def test_retry_after_accepts_an_http_date() -> None:
    now = datetime(2026, 11, 20, 15, 0, 0, tzinfo=UTC)
    assert p.parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90.0
    assert p.parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now=now) == 0.0
    assert p.parse_retry_after("soon", now=now) is None


def test_a_non_json_error_body_gives_its_first_200_characters(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, body="Bad Gateway " + "x" * 500, status=502, content_type="text/plain")
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert info.value.kind == "http_5xx"
    assert info.value.detail.startswith("Bad Gateway x")
    assert len(info.value.detail) <= 200


def test_the_token_never_appears_in_a_provider_error(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, json={"status": {"text": f"invalid token Bearer {TOKEN}"}}, status=401)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    err = info.value
    for text in (str(err), repr(err), err.detail, *map(str, err.args)):
        assert TOKEN not in text
    assert "invalid token" in err.detail


def test_the_token_never_appears_in_a_connection_error_detail(
    client: BatchDataClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.POST, URL, body=requests.exceptions.ConnectionError(f"reset while sending {TOKEN}"))
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert TOKEN not in str(info.value) and TOKEN not in info.value.detail


def test_provider_error_survives_pickling() -> None:
    err = ProviderError("rate_limited", "slow", status_code=429, retry_after=3.0, maybe_sent=True)
    back = pickle.loads(pickle.dumps(err))
    assert (back.kind, back.detail, back.status_code, back.retry_after, back.maybe_sent) == (
        "rate_limited",
        "slow",
        429,
        3.0,
        True,
    )
    assert back.transient


# ---------------------------------------------------------------- network failures (mocked)


def _refused() -> requests.exceptions.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111] Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, URL, reason))


@pytest.mark.parametrize(
    "exc,kind,maybe_sent",
    [
        (_refused(), "connection", False),
        (requests.exceptions.ConnectTimeout("connect timed out"), "timeout", False),
        (requests.exceptions.ReadTimeout("read timed out"), "timeout", True),
        (
            requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
            "connection",
            True,
        ),
        (requests.exceptions.ChunkedEncodingError("connection broken"), "connection", True),
    ],
    ids=["refused", "connect-timeout", "read-timeout", "reset-after-send", "chunked"],
)
def test_network_failures_say_whether_the_request_may_have_been_sent(
    client: BatchDataClient, rsps: responses.RequestsMock, exc: Exception, kind: str, maybe_sent: bool
) -> None:
    rsps.add(responses.POST, URL, body=exc)
    with pytest.raises(ProviderError) as info:
        client.skip_trace([req()])
    assert (info.value.kind, info.value.maybe_sent, info.value.transient) == (kind, maybe_sent, True)
    assert info.value.status_code is None


# ---------------------------------------------------------------- network failures (real loopback socket)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _SilentServer:
    """Accepts one connection, reads the request, then either holds it open or closes it."""

    def __init__(self, close_after_read: bool) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.close_after_read = close_after_read
        self.release = threading.Event()
        self.got_request = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(5)
            try:
                if conn.recv(65536):
                    self.got_request.set()
            except OSError:
                pass
            if not self.close_after_read:
                self.release.wait(5)

    def close(self) -> None:
        self.release.set()
        self.thread.join(5)
        self.sock.close()


def _loopback_client(port: int, timeout: float = 5.0) -> BatchDataClient:
    return BatchDataClient(base_url=f"http://127.0.0.1:{port}", path=PATH, token=TOKEN, timeout=timeout)


def test_a_refused_connection_is_surely_not_sent() -> None:
    with pytest.raises(ProviderError) as info:
        _loopback_client(_free_port()).skip_trace([req()])
    assert (info.value.kind, info.value.maybe_sent) == ("connection", False)


def test_a_read_timeout_may_have_been_sent() -> None:
    server = _SilentServer(close_after_read=False)
    try:
        with pytest.raises(ProviderError) as info:
            _loopback_client(server.port, timeout=0.3).skip_trace([req()])
    finally:
        server.close()
    assert server.got_request.is_set()
    assert (info.value.kind, info.value.maybe_sent) == ("timeout", True)


def test_a_connection_closed_after_sending_may_have_been_sent() -> None:
    server = _SilentServer(close_after_read=True)
    try:
        with pytest.raises(ProviderError) as info:
            _loopback_client(server.port).skip_trace([req()])
    finally:
        server.close()
    assert server.got_request.is_set()
    assert (info.value.kind, info.value.maybe_sent) == ("connection", True)


# ---------------------------------------------------------------- logging and masking


def test_it_logs_one_info_line_without_phones_emails_or_token(
    client: BatchDataClient, rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.add(
        responses.POST,
        URL,
        json=answer(
            person(phoneNumbers=[{"number": "8135550142"}], emails=[{"email": "d.alvarez@example.com"}]),
            match_count=1,
        ),
    )
    with caplog.at_level(logging.DEBUG, logger="convexa.provider"):
        client.skip_trace([req()])
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) == 1
    assert (
        URL in info[0].getMessage()
        and "requests=1" in info[0].getMessage()
        and "status=200" in info[0].getMessage()
    )
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN, "8135550142", "d.alvarez@example.com"):
        assert secret not in everything


def test_an_error_is_logged_once_at_info_without_the_token(
    client: BatchDataClient, rsps: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsps.add(responses.POST, URL, json={"message": f"bad {TOKEN}"}, status=500)
    with caplog.at_level(logging.INFO, logger="convexa.provider"), pytest.raises(ProviderError):
        client.skip_trace([req()])
    info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(info) == 1 and "http_5xx" in info[0].getMessage()
    assert TOKEN not in info[0].getMessage()


@pytest.mark.parametrize(
    "raw,masked",
    [("+18135550142", "+1813***0142"), ("8135550142", "+1813***0142"), ("555", "***")],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


@pytest.mark.parametrize(
    "raw,masked",
    [("d.alvarez@example.com", "d***@example.com"), ("x@y.org", "x***@y.org"), ("nonsense", "***")],
)
def test_mask_email(raw: str, masked: str) -> None:
    assert mask_email(raw) == masked


@needs_examples
def test_sanitize_for_debug_masks_every_phone_and_email_of_the_example_response() -> None:
    original = load_example("response_batch.json")
    before = json.dumps(original)
    clean = sanitize_for_debug(original)
    text = json.dumps(clean)
    for raw in ("8135550142", "8135550199", "8135550107", "d.alvarez@", "denise.a@", "hkim@"):
        assert raw not in text
    assert "+1813***0142" in text and "d***@example.com" in text
    assert clean["results"]["meta"]["results"]["matchCount"] == 2  # the rest is intact
    assert clean["results"]["persons"][0]["propertyAddress"]["zip"] == "33610"
    assert json.dumps(original) == before  # a copy: the input is untouched


def test_sanitize_for_debug_drops_authorization_and_token_keys_and_handles_json_text() -> None:
    obj = {
        "headers": {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        "token": TOKEN,
        "api_token": TOKEN,
        "note": "call (813) 555-0142 or mail Owner@Example.com",
        "phone": 8135550142,
    }
    clean = sanitize_for_debug(obj)
    assert clean == {
        "headers": {"Accept": "application/json"},
        "note": "call +1813***0142 or mail O***@Example.com",
        "phone": "+1813***0142",
    }
    as_text = sanitize_for_debug(json.dumps(obj))
    assert isinstance(as_text, str) and json.loads(as_text) == clean
