"""The BatchData sandbox: the pure answer, the HTTP server, its faults and stats, and the command.

No Django settings needed; every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import re
import signal
import threading
import time
from collections import Counter

import pytest
import requests

from devtools.sandbox import (
    FAULTS,
    SKIPTRACE_PATH,
    SKIPTRACE_PATH_V3,
    UNREADABLE_KINDS,
    SandboxConfig,
    SandboxServer,
    SandboxStats,
    add_arguments,
    answer,
    answer_v3,
    config_from_options,
    has_unit,
    item_key,
    match_decision,
    max_in_window,
    strip_unit,
    unreadable_answer,
)

AUTH = {"Authorization": "Bearer test-token"}


def req(
    street: str,
    *,
    city: str = "TAMPA",
    state: str = "FL",
    zip_code: str = "33610",
    first: str | None = "DENISE",
    last: str | None = "ALVAREZ",
    request_id: str | None = None,
) -> dict:
    item: dict = {"propertyAddress": {"street": street, "city": city, "state": state, "zip": zip_code}}
    if first is not None or last is not None:
        item["name"] = {"first": first, "last": last}
    if request_id is not None:
        item["requestId"] = request_id
    return item


def body(*items: dict) -> dict:
    return {"requests": list(items), "options": {"includeTCPABlacklistedPhones": True}}


def persons(payload: dict) -> list[dict]:
    return payload["results"]["persons"]


def many(n: int, suffix: str = "") -> list[dict]:
    return [req(f"{100 + i} OAK HOLLOW DR{suffix}", zip_code=f"{33600 + i % 50}") for i in range(n)]


@pytest.fixture(autouse=True)
def _product_settings():
    """Shadows conftest's autouse fixture: the sandbox needs no Django, so this file runs without it."""


@pytest.fixture
def server():
    with SandboxServer(config=SandboxConfig()) as srv:
        yield srv


def post(
    srv: SandboxServer, payload: object, headers: dict | None = AUTH, timeout: float = 5
) -> requests.Response:
    return requests.post(srv.url + SKIPTRACE_PATH, json=payload, headers=headers, timeout=timeout)


# -- the pure answer --------------------------------------------------------------------------------


def test_answer_is_deterministic_for_the_same_input_and_seed():
    b = body(*many(40))
    first = answer(copy.deepcopy(b), SandboxConfig())
    again = answer(copy.deepcopy(b), SandboxConfig())
    assert first == again
    other_seed = answer(copy.deepcopy(b), SandboxConfig(seed=8))
    assert [p["meta"]["matched"] for p in persons(first[1])] != [
        p["meta"]["matched"] for p in persons(other_seed[1])
    ]


def test_answer_has_one_person_per_request_in_request_order_echoing_the_address():
    items = many(30)
    code, payload = answer(body(*items), SandboxConfig())
    assert code == 200
    assert payload["status"] == {"code": 200, "text": "OK"}
    got = persons(payload)
    assert len(got) == 30
    for sent, person in zip(items, got, strict=True):
        pa = sent["propertyAddress"]
        echo = person["propertyAddress"]
        assert {k: echo[k] for k in ("street", "city", "state", "zip")} == pa
        assert echo["houseNumber"] == pa["street"].split()[0]
        assert person["meta"]["error"] is False
    meta = payload["results"]["meta"]
    matched = sum(p["meta"]["matched"] for p in got)
    assert meta["results"] == {
        "requestCount": 30,
        "matchCount": matched,
        "noMatchCount": 30 - matched,
        "errorCount": 0,
    }
    assert 0 < matched < 30
    assert isinstance(meta["requestId"], str) and meta["requestId"]


def test_answer_echoes_request_id_only_when_the_request_had_one():
    _, payload = answer(
        body(
            req("1 NOMATCH RD", request_id="L1"),
            req("2 ALWAYSMATCH RD"),
            req("3 ALWAYSMATCH RD", request_id="L3"),
        ),
        SandboxConfig(),
    )
    assert [p.get("requestId") for p in persons(payload)] == ["L1", None, "L3"]
    assert "requestId" not in persons(payload)[1]


def test_unmatched_person_has_only_the_address_echo_and_meta():
    _, payload = answer(body(req("9 NOMATCH WAY")), SandboxConfig())
    assert persons(payload)[0] == {
        "propertyAddress": {
            "houseNumber": "9",
            "street": "9 NOMATCH WAY",
            "city": "TAMPA",
            "state": "FL",
            "zip": "33610",
        },
        "meta": {"matched": False, "error": False},
    }


def test_nomatch_never_matches_and_alwaysmatch_always_matches_with_contacts():
    cfg = SandboxConfig(match_rate=1.0)
    _, payload = answer(body(req("1 NOMATCH ST"), req("1 NOMATCH ST APT 2")), cfg)
    assert [p["meta"]["matched"] for p in persons(payload)] == [False, False]
    cfg = SandboxConfig(match_rate=0.0)
    items = [req(f"{i} ALWAYSMATCH ST APT {i}", first=None, last=None) for i in range(20)]
    _, payload = answer(body(*items), cfg)
    for person in persons(payload):
        assert person["meta"]["matched"] is True
        assert person["litigator"] is False
        assert person["phoneNumbers"] and person["phoneNumbers"][0]["type"] == "Mobile"
        assert person["phoneNumbers"][0]["dnc"] is False and person["phoneNumbers"][0]["tcpa"] is False
        assert person["emails"]
        assert person["name"]["first"] and person["name"]["last"]  # invented: no name was sent


def test_match_rate_bounds_hold():
    none = answer(body(*many(50)), SandboxConfig(match_rate=0.0))[1]
    every = answer(body(*many(50)), SandboxConfig(match_rate=1.0))[1]
    assert none["results"]["meta"]["results"]["matchCount"] == 0
    assert every["results"]["meta"]["results"]["matchCount"] == 50


def test_unit_detection_and_stripping():
    assert strip_unit("77 Bayview Ter Apt 3") == "77 BAYVIEW TER"
    assert strip_unit("77 Bayview Terrace, #3") == "77 BAYVIEW TERRACE"
    assert strip_unit("2 HARBOR BLVD STE. 210") == "2 HARBOR BLVD"
    assert strip_unit("12 LAKE SHORE BLVD UNIT 5B") == "12 LAKE SHORE BLVD"
    assert strip_unit("5 MAIN ST BLDG 2 RM 14") == "5 MAIN ST"
    for street in ("10 PARKING LOT RD", "4 FLORIDA AVE", "300 SUITE LN", "1 MAIN ST"):
        assert not has_unit(street), street


def test_some_unit_addresses_only_match_without_the_unit():
    cfg = SandboxConfig()
    found = None
    for i in range(200):
        with_unit = req(
            f"{10 + i} BAYVIEW TER APT {i % 7 + 1}", city="BALTIMORE", state="MD", zip_code="21224"
        )
        matched, reason = match_decision(with_unit, cfg)
        if not matched and reason == "unit_only_matches_without_unit":
            found = with_unit
            break
    assert found is not None
    sanitized = copy.deepcopy(found)
    sanitized["propertyAddress"]["street"] = strip_unit(found["propertyAddress"]["street"])
    _, payload = answer(body(found, sanitized), cfg)
    first, second = persons(payload)
    assert first["meta"]["matched"] is False
    assert second["meta"]["matched"] is True
    # About half of the unit inputs are refused this way (match_rate 0.7).
    refused = sum(match_decision(r, cfg)[1] == "unit_only_matches_without_unit" for r in many(400, " APT 4"))
    assert 150 < refused < 250


def test_matched_persons_look_like_the_real_api():
    everyone = []
    for suffix in ("", " APT 9"):
        code, payload = answer(body(*many(100, suffix)), SandboxConfig(match_rate=1.0))
        assert code == 200
        everyone += persons(payload)
    phones = [ph for p in everyone if p["meta"]["matched"] for ph in p["phoneNumbers"]]
    emails = [e for p in everyone if p["meta"]["matched"] for e in p["emails"]]
    assert phones and emails
    for person in everyone:
        if not person["meta"]["matched"]:
            continue
        assert person["_id"] and person["name"] == {"first": "DENISE", "last": "ALVAREZ"}
        assert len(person["phoneNumbers"]) <= 4 and len(person["emails"]) <= 3
        types = [ph["type"] for ph in person["phoneNumbers"]]
        assert types == sorted(types, key=lambda t: t != "Mobile")  # mobiles first
        if person["litigator"]:
            assert person["phoneNumbers"] == []
    for ph in phones:
        assert len(ph["number"]) == 10 and ph["number"].isdigit() and ph["number"][3:6] == "555"
        assert ph["type"] in ("Mobile", "Land Line", "VoIP")
        assert 0 <= ph.get("score", 0) <= 100
    assert any(ph.get("dnc") for ph in phones) and any(ph.get("tcpa") for ph in phones)
    assert any("dnc" not in ph for ph in phones) and any("score" not in ph for ph in phones)
    addresses = [e.get("email") or e.get("address") for e in emails]
    assert all(a.split("@")[1] in ("example.com", "example.net", "example.org") for a in addresses)
    assert any("address" in e for e in emails) and any("email" in e for e in emails)


def test_tcpa_phones_are_dropped_without_the_include_option():
    items = many(100)
    with_tcpa = answer(
        {"requests": items, "options": {"includeTCPABlacklistedPhones": True}}, SandboxConfig()
    )[1]
    without = answer({"requests": items}, SandboxConfig())[1]
    assert any(ph.get("tcpa") for p in persons(with_tcpa) for ph in p.get("phoneNumbers", []))
    assert not any(ph.get("tcpa") for p in persons(without) for ph in p.get("phoneNumbers", []))


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {},
        {"requests": []},
        {"requests": "x"},
        {"requests": [req("1 MAIN ST")] * 101},
        {"requests": ["1 MAIN ST"]},
        {"requests": [{"name": {"first": "A"}}]},
        {"requests": [{"propertyAddress": {"city": "TAMPA"}}]},
        {"requests": [{"propertyAddress": {"street": "   "}}]},
    ],
)
def test_bad_bodies_are_refused_with_400(bad):
    code, payload = answer(bad, SandboxConfig())
    assert code == 400
    assert payload["status"]["code"] == 400 and payload["status"]["text"]


def test_max_in_window_counts_a_half_open_one_second_window():
    assert max_in_window([], 1.0) == 0
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.2, 5.0], 1.0) == 4  # 0.5 .. 1.2
    assert max_in_window([3.0, 0.0, 1.0, 2.0], 1.0) == 1


# -- the HTTP server --------------------------------------------------------------------------------


def test_server_answers_like_answer_over_http(server):
    b = body(*many(5, " APT 1"), req("1 ALWAYSMATCH ST", request_id="X"))
    resp = post(server, b)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.json() == answer(b, server.config)[1]
    assert server.url.startswith("http://127.0.0.1:")


def test_401_without_a_bearer_token_or_with_the_wrong_one(server):
    for headers in (None, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        resp = post(server, body(req("1 MAIN ST")), headers=headers)
        assert resp.status_code == 401
        assert resp.json() == {"status": {"code": 401, "text": "Unauthorized"}}
    server.config.token = "s3cret"
    assert post(server, body(req("1 MAIN ST")), headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert post(server, body(req("1 MAIN ST")), headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_x_api_key_is_accepted_only_when_enabled(server):
    headers = {"X-API-Key": "k"}
    assert post(server, body(req("1 MAIN ST")), headers=headers).status_code == 401
    server.config.accept_x_api_key = True
    assert post(server, body(req("1 MAIN ST")), headers=headers).status_code == 200
    server.config.token = "other"
    assert post(server, body(req("1 MAIN ST")), headers=headers).status_code == 401


def test_invalid_json_and_bad_bodies_are_400_over_http(server):
    resp = requests.post(server.url + SKIPTRACE_PATH, data=b"{not json", headers=AUTH, timeout=5)
    assert resp.status_code == 400 and resp.json()["status"]["code"] == 400
    resp = post(server, {"requests": []})
    assert resp.json() == {"status": {"code": 400, "text": "The requests field is required"}}


def test_unknown_routes_are_404_json_and_get_on_the_endpoint_is_405(server):
    resp = requests.get(server.url + "/nope", timeout=5)
    assert resp.status_code == 404 and resp.json()["status"]["code"] == 404
    assert requests.post(server.url + "/api/v2/property/skip-trace", json={}, timeout=5).status_code == 404
    assert requests.get(server.url + SKIPTRACE_PATH, timeout=5).status_code == 405


@pytest.mark.parametrize(("fault", "status"), [("500", 500), ("429", 429), ("401", 401), ("402", 402)])
def test_status_faults(server, fault, status):
    server.config.fault = fault
    server.config.retry_after = 3
    resp = post(server, body(req("1 ALWAYSMATCH ST")))
    assert resp.status_code == status
    assert resp.json()["status"]["code"] == status
    assert (resp.headers.get("Retry-After") == "3") == (status == 429)


def test_timeout_fault_hangs_then_answers(server):
    server.config.fault = "timeout"
    server.config.hang_s = 0.5
    with pytest.raises(requests.Timeout):
        post(server, body(req("1 ALWAYSMATCH ST")), timeout=0.2)
    server.config.hang_s = 0.2
    started = time.monotonic()
    resp = post(server, body(req("1 ALWAYSMATCH ST")), timeout=3)
    assert resp.status_code == 200 and time.monotonic() - started >= 0.2


def test_reset_fault_drops_the_connection(server):
    server.config.fault = "reset"
    with pytest.raises(requests.ConnectionError):
        post(server, body(req("1 ALWAYSMATCH ST")))


def test_malformed_fault_is_a_200_that_is_not_json(server):
    server.config.fault = "malformed"
    resp = post(server, body(req("1 ALWAYSMATCH ST")))
    assert resp.status_code == 200
    with pytest.raises(ValueError):
        json.loads(resp.text)


def test_drift_fault_leaves_out_results_persons(server):
    server.config.fault = "drift"
    resp = post(server, body(req("1 ALWAYSMATCH ST")))
    assert resp.status_code == 200
    assert "persons" not in resp.json()["results"]


def test_short_fault_answers_one_person_fewer(server):
    server.config.fault = "short"
    resp = post(server, body(*many(3)))
    assert resp.status_code == 200 and len(persons(resp.json())) == 2


def test_error_rate_is_deterministic_per_seed(server):
    server.update_config(error_rate=0.5, error_status=503)

    def codes() -> list[int]:
        return [post(server, body(req("1 MAIN ST"))).status_code for _ in range(12)]

    first = codes()
    assert set(first) == {200, 503}
    server.reset()
    assert codes() == first


def test_stop_does_not_wait_for_a_hanging_request():
    srv = SandboxServer(config=SandboxConfig(fault="timeout", hang_s=30)).start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            post(srv, body(req("1 MAIN ST")), timeout=10)
        except requests.RequestException as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while srv.stats.current_concurrent == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    srv.stop()
    caller.join(5)
    assert time.monotonic() - started < 2
    assert len(errors) == 1  # the hanging call was dropped, never answered


# -- stats ------------------------------------------------------------------------------------------


def test_stats_count_requests_items_and_keys_even_for_faulted_requests(server):
    post(server, body(req("4410 Oak Hollow Dr", city="Tampa"), req("1 MAIN ST", first=None, last=None)))
    server.config.fault = "500"
    post(server, body(req("4410 Oak Hollow Dr", city="Tampa")))
    snap = requests.get(server.url + "/_sandbox/stats", timeout=5).json()
    assert snap["requests"] == 2 and snap["items"] == 3
    assert snap["item_keys"] == {
        "4410 OAK HOLLOW DR|TAMPA|FL|33610|DENISE|ALVAREZ": 2,
        "1 MAIN ST|TAMPA|FL|33610||": 1,
    }
    assert item_key(req("1 MAIN ST", first=None, last=None)) == "1 MAIN ST|TAMPA|FL|33610||"
    assert len(snap["request_times"]) == 2 and snap["max_in_any_1s_window"] == 2
    assert snap["max_concurrent"] == 1 and snap["current_concurrent"] == 0
    assert requests.post(server.url + "/_sandbox/reset", timeout=5).status_code == 200
    assert server.stats.snapshot()["requests"] == 0 and server.stats.snapshot()["item_keys"] == {}


def test_stats_track_max_concurrency_and_the_busiest_second(server):
    server.config.latency_s = 0.2
    barrier = threading.Barrier(4)
    codes: list[int] = []

    def call() -> None:
        barrier.wait()
        codes.append(post(server, body(req("1 MAIN ST"))).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert codes == [200] * 4
    snap = server.stats.snapshot()
    assert snap["max_concurrent"] == 4 and snap["current_concurrent"] == 0
    assert snap["max_in_any_1s_window"] == 4
    json.dumps(snap)  # JSON-able


def test_stats_reset_keeps_in_flight_requests_counted():
    stats = SandboxStats()
    stats.arrive(1.0, ["A"])
    stats.reset()
    stats.leave()
    assert stats.current_concurrent == 0 and stats.max_concurrent == 1 and stats.requests == 0


# -- runtime config ---------------------------------------------------------------------------------


def test_config_endpoint_changes_behaviour(server):
    resp = requests.post(server.url + "/_sandbox/config", json={"fault": "429", "retry_after": 7}, timeout=5)
    assert resp.status_code == 200 and resp.json()["fault"] == "429"
    first = post(server, body(req("1 MAIN ST")))
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    requests.post(server.url + "/_sandbox/config", json={"fault": None, "match_rate": 0.0}, timeout=5)
    ok = post(server, body(*many(5)))
    assert ok.status_code == 200 and ok.json()["results"]["meta"]["results"]["matchCount"] == 0
    assert requests.get(server.url + "/_sandbox/config", timeout=5).json()["match_rate"] == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"fault": "explode"},
        {"nope": 1},
        {"match_rate": 2},
        {"latency_s": "x"},
        [1],
        {"unreadable_rate": 1.5},
        {"unreadable_rate": -0.1},
        {"unreadable_rate": "half"},
        {"match_count_extra": -1},
        {"match_count_extra": 1.5},
        {"match_count_extra": True},
        {"unreadable_kinds": ["not_json", "gibberish"]},
        {"unreadable_kinds": 5},
        {"match_count_extra": 2, "unreadable_rate": 9},  # all or nothing
    ],
)
def test_config_endpoint_refuses_bad_updates_without_applying_them(server, bad):
    resp = requests.post(server.url + "/_sandbox/config", json=bad, timeout=5)
    assert resp.status_code == 400 and resp.json()["status"]["text"]
    assert server.config == SandboxConfig()


# -- the management command -------------------------------------------------------------------------


def test_command_refuses_a_host_that_is_not_loopback():
    pytest.importorskip("django")
    from django.core.management import CommandError, call_command

    from devtools.management.commands.batchdata_sandbox import Command

    for host in ("0.0.0.0", "10.0.0.5", "example.com"):
        with pytest.raises(CommandError, match="loopback"):
            call_command(Command(), host=host, port=0)


def test_command_serves_until_sigterm_and_exits_cleanly():
    pytest.importorskip("django")
    from django.core.management import call_command

    from devtools.management.commands.batchdata_sandbox import Command

    out = io.StringIO()
    seen: dict = {}

    def drive() -> None:
        deadline = time.monotonic() + 3
        while "listening on" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        line = out.getvalue()
        url = line.split("listening on ")[1].split(" ")[0]
        seen["status"] = requests.post(
            url + SKIPTRACE_PATH, json=body(req("1 MAIN ST")), headers=AUTH, timeout=3
        ).status_code
        os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive)
    driver.start()
    call_command(Command(), host="127.0.0.1", port=0, stdout=out)
    driver.join(5)
    assert seen["status"] == 200
    assert "(set BATCHDATA_BASE_URL to this)" in out.getvalue()
    assert "stopped after 1 requests" in out.getvalue()


# -- V3 ---------------------------------------------------------------------------------------------

ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
PHONE_KEYS = {"rank", "number", "type", "carrier", "tested", "reachable", "dnc", "tcpa"}


def data(payload: dict) -> list[dict]:
    return payload["result"]["data"]


def v3_body(*items: dict) -> dict:
    return {"requests": list(items)}


def post_v3(srv: SandboxServer, payload: object, headers: dict | None = AUTH) -> requests.Response:
    return requests.post(srv.url + SKIPTRACE_PATH_V3, json=payload, headers=headers, timeout=5)


def all_entries(n: int = 400, **config) -> list[dict]:
    cfg = SandboxConfig(**config)
    out: list[dict] = []
    for chunk in range(0, n, 100):
        items = [
            req(f"{100 + i} PALM GROVE DR", zip_code=f"{33600 + i % 50}") for i in range(chunk, chunk + 100)
        ]
        out += data(answer_v3(v3_body(*items), cfg)[1])
    return out


def check_person(person: dict) -> None:
    assert set(person) <= {
        "propertyOwner",
        "name",
        "phones",
        "emails",
        "addresses",
        "litigator",
        "deceased",
        "dob",
    }
    assert {"propertyOwner", "name", "phones", "emails", "addresses", "litigator", "deceased"} <= set(person)
    assert isinstance(person["propertyOwner"], bool)
    name = person["name"]
    assert set(name) <= {"first", "middle", "last", "full"} and name["first"] and name["last"]
    assert name["full"] == " ".join(p for p in (name["first"], name.get("middle"), name["last"]) if p)
    assert [ph["rank"] for ph in person["phones"]] == list(range(1, len(person["phones"]) + 1))
    for ph in person["phones"]:
        assert set(ph) == PHONE_KEYS  # every flag present, no V1 `score`
        assert len(ph["number"]) == 10 and ph["number"].isdigit() and ph["number"][3:6] == "555"
        assert ph["type"] in ("Mobile", "Land Line", "VoIP")
        assert isinstance(ph["carrier"], str) and ph["carrier"]
        assert all(isinstance(ph[k], bool) for k in ("tested", "reachable", "dnc", "tcpa"))
    assert [e["rank"] for e in person["emails"]] == list(range(1, len(person["emails"]) + 1))
    for e in person["emails"]:
        assert set(e) == {"rank", "email", "tested"} and isinstance(e["tested"], bool)
        assert e["email"].split("@")[1] in ("example.com", "example.net", "example.org")
    for a in person["addresses"]:
        assert set(a) == {"street", "city", "state", "zip"}
    assert isinstance(person["litigator"], bool) and isinstance(person["deceased"], bool)
    if "dob" in person:
        assert re.fullmatch(r"(19|20)\d\d-(0[1-9]|1[0-2])-(0[1-9]|[12]\d)", person["dob"])


def test_v3_answer_shape_field_by_field_on_a_sample():
    sent = [
        {
            "requestId": "A-1001",
            "propertyAddress": {
                "street": "4410 FAMILYMATCH Dr",
                "city": "Tampa",
                "state": "FL",
                "zip": "33610",
            },
            "name": {"first": "Denise", "last": "Alvarez"},
        },
        {
            "requestId": "A-1002",
            "propertyAddress": {
                "street": "9 ALWAYSMATCH Ct",
                "city": "Tampa",
                "state": "FL",
                "zip": "33610-4021",
            },
        },
        {
            "requestId": "A-1003",
            "propertyAddress": {"street": "1 NOMATCH Rd", "city": "Tampa", "state": "FL", "zip": "33610"},
        },
    ]
    code, payload = answer_v3({"requests": copy.deepcopy(sent), "options": {"whatever": 1}}, SandboxConfig())
    assert code == 200
    assert set(payload) == {"status", "result"} and payload["status"] == {"code": 200, "text": "OK"}
    assert set(payload["result"]) == {"data", "meta"}
    meta = payload["result"]["meta"]
    assert set(meta) == {"apiVersion", "results", "requestId"} and meta["apiVersion"] == "3.0.4"
    assert ULID_RE.match(meta["requestId"])
    assert meta["results"] == {"requestCount": 3, "matchCount": 2, "noMatchCount": 1, "errorCount": 0}
    family, always, nomatch = data(payload)

    # input: the request echoed (name only when sent), in request order
    assert [e["input"] for e in data(payload)] == sent
    assert "name" not in always["input"]

    # property
    assert list(family) == ["input", "property", "persons", "meta"]
    prop = family["property"]
    assert set(prop) == {"id", "address", "mailingAddress", "owners"} and UUID_RE.match(prop["id"])
    address = prop["address"]
    assert {k: address[k] for k in ("street", "city", "state", "zip")} == sent[0]["propertyAddress"]
    assert set(address) <= {"street", "city", "state", "zip", "zipPlus4", "county", "fullAddress"}
    assert address["fullAddress"] == "4410 FAMILYMATCH Dr, Tampa, FL 33610"
    assert address["county"] == "Hillsborough"
    assert re.fullmatch(r"\d{4}", address.get("zipPlus4", "0000"))
    assert always["property"]["address"]["zip"] == "33610"  # ZIP+4 sent: zip is the ZIP5 ...
    assert always["property"]["address"]["zipPlus4"] == "4021"  # ... and the +4 is kept
    assert set(prop["mailingAddress"]) == {"street", "city", "state", "zip"}
    owners = [p["name"] for p in family["persons"] if p["propertyOwner"]]
    assert prop["owners"] == [
        {"name": {"first": n["first"], "last": n["last"], "full": f"{n['first']} {n['last']}"}}
        for n in owners
    ]
    assert prop["owners"][0]["name"]["full"] == "Denise Alvarez"

    # persons: FAMILYMATCH = owner (the sent name), co-owner, non-owner relative
    assert [p["propertyOwner"] for p in family["persons"]] == [True, True, False]
    assert (
        family["persons"][0]["name"]["first"] == "Denise"
        and family["persons"][0]["name"]["last"] == "Alvarez"
    )
    assert family["persons"][1]["name"]["last"] == "Alvarez"
    for entry in (family, always):
        assert entry["meta"] == {"matched": True, "error": False}
        for person in entry["persons"]:
            check_person(person)
    numbers = [ph["number"] for p in family["persons"] for ph in p["phones"]]
    assert len(numbers) == len(set(numbers))  # no number handed to two persons of one household
    first = always["persons"][0]
    assert first["propertyOwner"] is True and first["litigator"] is False and first["deceased"] is False
    assert first["phones"][0]["rank"] == 1 and first["phones"][0]["type"] == "Mobile"
    assert (
        first["phones"][0]["reachable"] and not first["phones"][0]["dnc"] and not first["phones"][0]["tcpa"]
    )
    assert first["emails"]

    # unmatched: the echo, no property, no persons
    assert nomatch == {
        "input": sent[2],
        "persons": [],
        "meta": {"matched": False, "error": False},
    }


def test_v3_is_deterministic_and_shares_the_match_decision_with_v1():
    items = many(60) + many(40, " APT 2")
    first = answer_v3(v3_body(*copy.deepcopy(items)), SandboxConfig())
    assert first == answer_v3(v3_body(*copy.deepcopy(items)), SandboxConfig())
    other_seed = answer_v3(v3_body(*copy.deepcopy(items)), SandboxConfig(seed=8))
    assert data(first[1]) != data(other_seed[1])
    v1 = answer(body(*copy.deepcopy(items)), SandboxConfig())[1]
    assert [p["meta"]["matched"] for p in persons(v1)] == [e["meta"]["matched"] for e in data(first[1])]
    assert any(e["meta"]["matched"] for e in data(first[1])) and not all(
        e["meta"]["matched"] for e in data(first[1])
    )
    # An entry depends on its own input only, not on the batch around it.
    alone = answer_v3(v3_body(copy.deepcopy(items[7])), SandboxConfig())[1]
    assert data(alone)[0] == data(first[1])[7]
    assert first[1]["result"]["meta"]["requestId"] != alone["result"]["meta"]["requestId"]


def test_v3_persons_range_from_0_to_3_with_co_owners_relatives_litigators_and_deceased():
    entries = all_entries(400, match_rate=1.0)
    counts = Counter(len(e["persons"]) for e in entries)
    assert set(counts) == {0, 1, 2, 3}
    assert counts[1] > counts[2] > counts[3] > 0 and counts[0] > 0
    people = [p for e in entries for p in e["persons"]]
    for person in people:
        check_person(person)
    co_owners = [p for e in entries for p in e["persons"][1:] if p["propertyOwner"]]
    relatives = [p for p in people if not p["propertyOwner"]]
    assert co_owners and relatives
    assert all(e["persons"][0]["propertyOwner"] for e in entries if e["persons"])
    litigators = [p for p in people if p["litigator"]]
    assert litigators and any(p["phones"] for p in litigators)  # V3 litigators may come with phones
    assert any(p["deceased"] for p in people)
    assert any(ph["tcpa"] for p in people for ph in p["phones"])  # V3 keeps TCPA-flagged phones
    assert any(ph["dnc"] for p in people for ph in p["phones"])
    for e in entries:
        assert e["meta"]["matched"] is True and "property" in e  # matched with 0 persons keeps the property
        owners = [(p["name"]["first"], p["name"]["last"]) for p in e["persons"] if p["propertyOwner"]]
        if owners:
            assert [(o["name"]["first"], o["name"]["last"]) for o in e["property"]["owners"]] == owners


def test_v3_markers():
    _, payload = answer_v3(
        v3_body(
            req("1 LITIGATOR LN"), req("2 DECEASEDMATCH DR"), req("3 FAMILYMATCH CT"), req("4 NOMATCH ST")
        ),
        SandboxConfig(match_rate=0.0),
    )
    litigator, deceased, family, nomatch = data(payload)
    owner = litigator["persons"][0]
    assert owner["litigator"] is True and owner["deceased"] is False and owner["phones"]
    assert deceased["persons"][0]["deceased"] is True and deceased["persons"][0]["litigator"] is False
    assert [p["propertyOwner"] for p in family["persons"]] == [True, True, False]
    assert nomatch["meta"]["matched"] is False
    assert payload["result"]["meta"]["results"]["matchCount"] == 3


def test_v3_match_count_counts_entries_matched_with_at_least_one_person():
    items = [req(f"{100 + i} PALM GROVE DR", zip_code=f"{33600 + i % 50}") for i in range(100)]
    _, payload = answer_v3(v3_body(*items), SandboxConfig())
    entries = data(payload)
    with_person = sum(1 for e in entries if e["meta"]["matched"] and e["persons"])
    matched_without = sum(1 for e in entries if e["meta"]["matched"] and not e["persons"])
    assert matched_without > 0  # the rule is exercised: these are matched but not billed
    assert payload["result"]["meta"]["results"] == {
        "requestCount": 100,
        "matchCount": with_person,
        "noMatchCount": 100 - with_person,
        "errorCount": 0,
    }


def test_v3_keeps_tcpa_phones_whatever_the_options():
    items = many(100)
    plain = answer_v3(v3_body(*items), SandboxConfig())
    with_option = answer_v3(
        {"requests": items, "options": {"includeTCPABlacklistedPhones": False}}, SandboxConfig()
    )
    assert data(plain[1]) == data(with_option[1])
    assert any(ph["tcpa"] for e in data(plain[1]) for p in e["persons"] for ph in p["phones"])


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {},
        {"requests": []},
        {"requests": [req("1 MAIN ST")] * 101},
        {"requests": [{"name": {}}]},
        {"requests": [req("1 MAIN ST")], "options": 3},
    ],
)
def test_v3_bad_bodies_are_refused_with_400(bad):
    code, payload = answer_v3(bad, SandboxConfig())
    assert code == 400 and payload["status"]["code"] == 400 and payload["status"]["text"]


def test_v3_over_http_and_the_per_path_counts(server):
    b = v3_body(*many(5), req("1 ALWAYSMATCH ST", request_id="X"))
    resp = post_v3(server, b)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/json"
    assert resp.json() == answer_v3(b, server.config)[1]
    assert post(server, body(req("1 MAIN ST"))).status_code == 200
    assert post_v3(server, b, headers=None).status_code == 401
    assert post_v3(server, {"requests": []}).json() == {
        "status": {"code": 400, "text": "The requests field is required"}
    }
    assert requests.get(server.url + SKIPTRACE_PATH_V3, timeout=5).status_code == 405
    assert requests.put(server.url + SKIPTRACE_PATH_V3, json={}, timeout=5).status_code == 405
    snap = requests.get(server.url + "/_sandbox/stats", timeout=5).json()
    assert snap["v1_requests"] == 1 and snap["v3_requests"] == 3 and snap["requests"] == 4
    assert snap["status_counts"] == {"200": 2, "401": 1, "400": 1}


# -- the bill: 403 balance, match_count_extra, unreadable answers, billed_matches --------------------


@pytest.mark.parametrize("path", [SKIPTRACE_PATH, SKIPTRACE_PATH_V3])
def test_403_insufficient_balance_on_both_paths(server, path):
    assert "403_balance" in FAULTS
    server.update_config(fault="403_balance")
    resp = requests.post(server.url + path, json=body(req("1 ALWAYSMATCH ST")), headers=AUTH, timeout=5)
    assert resp.status_code == 403
    assert resp.json() == {"status": {"code": 403, "text": "Insufficient balance"}}
    server.update_config(fault=None, error_rate=1.0, error_status=403)
    resp = requests.post(server.url + path, json=body(req("1 ALWAYSMATCH ST")), headers=AUTH, timeout=5)
    assert resp.json() == {"status": {"code": 403, "text": "Insufficient balance"}}
    assert server.stats.snapshot()["billed_matches"] == 0 and server.stats.snapshot()["billed_answers"] == 0


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_match_count_extra_raises_match_count_capped_at_the_request_count(version):
    fn, key = (answer, "results") if version == "v1" else (answer_v3, "result")
    items = many(20)
    base = fn(body(*items), SandboxConfig())[1][key]["meta"]["results"]
    assert 0 < base["matchCount"] < 18
    extra = fn(body(*items), SandboxConfig(match_count_extra=2))[1]
    assert extra[key]["meta"]["results"] == {
        "requestCount": 20,
        "matchCount": base["matchCount"] + 2,
        "noMatchCount": 20 - base["matchCount"] - 2,
        "errorCount": 0,
    }
    # the persons themselves are unchanged: only the count is above them
    plain = fn(body(*items), SandboxConfig())[1]
    assert extra[key].get("persons", extra[key].get("data")) == plain[key].get(
        "persons", plain[key].get("data")
    )
    capped = fn(body(*items), SandboxConfig(match_count_extra=1000))[1][key]["meta"]["results"]
    assert capped["matchCount"] == 20 and capped["noMatchCount"] == 0
    none = fn(body(req("1 NOMATCH ST")), SandboxConfig(match_count_extra=5))[1][key]["meta"]["results"]
    assert none["matchCount"] == 1 and none["requestCount"] == 1


def entry_list(payload: dict, version: str):
    container = payload["results"] if version == "v1" else payload["result"]
    return container.get("persons" if version == "v1" else "data")


def echoed_ids(entries: list[dict], version: str) -> list:
    return [e.get("requestId") if version == "v1" else e["input"].get("requestId") for e in entries]


@pytest.mark.parametrize(("version", "path"), [("v1", SKIPTRACE_PATH), ("v3", SKIPTRACE_PATH_V3)])
def test_unreadable_rate_rotates_the_kinds_and_keeps_match_count_readable(server, version, path):
    server.update_config(unreadable_rate=1.0, match_count_extra=1)
    fn = answer if version == "v1" else answer_v3
    sent = [req("1 ALWAYSMATCH ST", request_id="L1"), req("2 NOMATCH ST", request_id="L2"), *many(4)]
    for i, r in enumerate(sent[2:]):
        r["requestId"] = f"L{i + 3}"
    b = body(*sent)
    expected = fn(copy.deepcopy(b), server.config)[1]
    expected_count = (expected["results"] if version == "v1" else expected["result"])["meta"]
    seen = []
    for _ in range(len(UNREADABLE_KINDS)):
        resp = requests.post(server.url + path, json=b, headers=AUTH, timeout=5)
        assert resp.status_code == 200
        try:
            payload = json.loads(resp.text)
        except ValueError:
            seen.append("not_json")
            continue
        container = payload["results"] if version == "v1" else payload["result"]
        assert container["meta"] == expected_count  # matchCount stays readable: the call can be costed
        entries = entry_list(payload, version)
        if entries is None:
            seen.append("no_list")
        elif len(entries) == len(sent) - 1:
            seen.append("short_list")
        elif set(echoed_ids(entries, version)) - {r["requestId"] for r in sent}:
            seen.append("foreign_request_id")
        else:
            phones_key = "phoneNumbers" if version == "v1" else "phones"
            people = entries if version == "v1" else [p for e in entries for p in e["persons"]]
            assert any(isinstance(p.get(phones_key), str) for p in people)
            seen.append("wrong_type")
    assert seen == list(UNREADABLE_KINDS)
    snap = server.stats.snapshot()
    assert snap["unreadable_kinds"] == {kind: 1 for kind in UNREADABLE_KINDS}
    assert snap["unreadable_answers"] == len(UNREADABLE_KINDS)
    count = expected_count["results"]["matchCount"]
    assert snap["billed_matches"] == count * len(UNREADABLE_KINDS)  # not_json billed too
    assert snap["matched_items"] == (count - 1) * len(UNREADABLE_KINDS)
    assert snap[f"billed_matches_{version}"] == snap["billed_matches"]


def test_unreadable_rate_is_deterministic_and_apart_from_error_rate(server):
    server.update_config(unreadable_rate=0.5)

    def outcomes() -> list[bool]:
        out = []
        for _ in range(16):
            resp = post_v3(server, v3_body(req("1 ALWAYSMATCH ST")))
            try:
                readable = (
                    isinstance(resp.json()["result"].get("data"), list)
                    and len(resp.json()["result"]["data"]) == 1
                )
            except ValueError:
                readable = False
            out.append(readable)
        return out

    first = outcomes()
    assert set(first) == {True, False}
    server.reset()
    assert outcomes() == first
    # error_rate draws the same sequence whether or not unreadable answers are on
    server.update_config(unreadable_rate=0.0, error_rate=0.5)
    plain = [post(server, body(req("1 MAIN ST"))).status_code for _ in range(12)]
    server.update_config(unreadable_rate=0.7)
    assert [post(server, body(req("1 MAIN ST"))).status_code for _ in range(12)] == plain


def test_unreadable_kinds_can_be_narrowed_and_errors_stay_errors(server):
    resp = requests.post(
        server.url + "/_sandbox/config",
        json={"unreadable_rate": 1, "unreadable_kinds": "wrong_type"},
        timeout=5,
    )
    assert resp.status_code == 200 and resp.json()["unreadable_kinds"] == ["wrong_type"]
    assert resp.json()["unreadable_rate"] == 1.0
    for _ in range(2):
        payload = post_v3(server, v3_body(req("1 ALWAYSMATCH ST"))).json()
        assert isinstance(payload["result"]["data"][0]["persons"][0]["phones"], str)
    # only would-be 200s are mangled
    assert post_v3(server, {"requests": []}).status_code == 400
    assert server.stats.snapshot()["unreadable_kinds"] == {"wrong_type": 2}


def test_unreadable_answer_wrong_type_when_nothing_matched():
    b = body(req("1 NOMATCH ST", request_id="Q"))
    v1 = unreadable_answer(answer(b, SandboxConfig())[1], "v1", "wrong_type", b)[0]
    assert isinstance(persons(v1)[0]["meta"], str)
    v3 = unreadable_answer(answer_v3(b, SandboxConfig())[1], "v3", "wrong_type", b)[0]
    assert isinstance(data(v3)[0]["persons"], str)
    # without requestIds sent, any echoed requestId is foreign
    b = body(req("1 ALWAYSMATCH ST"))
    foreign = unreadable_answer(answer(b, SandboxConfig())[1], "v1", "foreign_request_id", b)[0]
    assert persons(foreign)[0]["requestId"]
    with pytest.raises(ValueError):
        unreadable_answer(answer(b, SandboxConfig())[1], "v1", "nope", b)


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ("malformed", lambda resp: pytest.raises(ValueError, json.loads, resp.text)),
        ("drift", lambda resp: "data" not in resp.json()["result"] and resp.json()["result"]["meta"]),
        ("short", lambda resp: len(resp.json()["result"]["data"]) == 2),
    ],
)
def test_v3_unreadable_faults_are_billed(server, fault, check):
    server.update_config(fault=fault)
    b = v3_body(req("1 ALWAYSMATCH ST"), req("2 ALWAYSMATCH ST"), req("3 NOMATCH ST"))
    resp = post_v3(server, b)
    assert resp.status_code == 200 and check(resp)
    snap = server.stats.snapshot()
    assert snap["billed_matches"] == 2 and snap["billed_matches_v3"] == 2
    assert snap["unreadable_kinds"] == {fault: 1}


def test_billed_matches_sum_match_count_over_every_2xx_answer(server):
    expected = 0
    b1 = body(*many(10))
    b3 = v3_body(*many(10, " APT 3"))
    expected += post(server, b1).json()["results"]["meta"]["results"]["matchCount"]
    expected += post_v3(server, b3).json()["result"]["meta"]["results"]["matchCount"]
    server.update_config(fault="500")
    post(server, b1)  # not billed
    server.update_config(fault="malformed")
    assert post(server, b1).status_code == 200  # billed, unreadable
    expected += answer(b1, server.config)[1]["results"]["meta"]["results"]["matchCount"]
    assert post(server, b1, headers=None).status_code == 401  # not billed
    server.update_config(fault=None, match_count_extra=3)
    expected += post_v3(server, b3).json()["result"]["meta"]["results"]["matchCount"]
    snap = requests.get(server.url + "/_sandbox/stats", timeout=5).json()
    assert snap["billed_matches"] == expected and expected > 0
    assert snap["billed_answers"] == 4
    assert snap["billed_matches_v1"] + snap["billed_matches_v3"] == expected
    assert snap["matched_items"] == expected - 3
    assert snap["item_keys"][item_key(b1["requests"][0])] == 4 and snap["max_item_key_count"] == 4
    server.reset()
    snap = server.stats.snapshot()
    assert snap["billed_matches"] == snap["billed_answers"] == snap["max_item_key_count"] == 0
    assert snap["v1_requests"] == snap["v3_requests"] == 0 and snap["unreadable_kinds"] == {}


def test_new_config_fields_through_the_dataclass_update_config_and_the_endpoint(server):
    assert SandboxConfig().unreadable_rate == 0.0 and SandboxConfig().match_count_extra == 0
    assert SandboxConfig(unreadable_kinds="not_json, short_list").unreadable_kinds == [
        "not_json",
        "short_list",
    ]
    for bad in ({"unreadable_rate": 2}, {"match_count_extra": -1}, {"unreadable_kinds": ["x"]}):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)
    server.update_config(match_count_extra=4, unreadable_rate=0.25, unreadable_kinds=["no_list"])
    got = requests.get(server.url + "/_sandbox/config", timeout=5).json()
    assert (got["match_count_extra"], got["unreadable_rate"], got["unreadable_kinds"]) == (
        4,
        0.25,
        ["no_list"],
    )
    resp = requests.post(server.url + "/_sandbox/config", json={"unreadable_kinds": ["bogus"]}, timeout=5)
    assert resp.status_code == 400 and "bogus" in resp.json()["status"]["text"]
    assert (
        requests.post(server.url + "/_sandbox/config", json={"unreadable_kinds": None}, timeout=5).json()[
            "unreadable_kinds"
        ]
        is None
    )


def test_cli_flags_for_the_new_fields():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = vars(
        parser.parse_args(
            [
                "--unreadable-rate",
                "0.3",
                "--unreadable-kinds",
                "not_json,wrong_type",
                "--match-count-extra",
                "2",
                "--fault",
                "403_balance",
            ]
        )
    )
    cfg = config_from_options(args)
    assert cfg.unreadable_rate == 0.3 and cfg.unreadable_kinds == ["not_json", "wrong_type"]
    assert cfg.match_count_extra == 2 and cfg.fault == "403_balance"
    defaults = config_from_options(vars(parser.parse_args([])))
    assert defaults == SandboxConfig()
    for bad in (["--unreadable-rate", "1.5"], ["--match-count-extra", "-1"], ["--unreadable-kinds", "x"]):
        with pytest.raises(ValueError, match="unreadable|match-count-extra"):
            config_from_options(vars(parser.parse_args(bad)))
