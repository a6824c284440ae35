"""The BatchData sandbox: the pure answer, the HTTP server, its faults and stats, and the command.

No Django settings needed; every server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import threading
import time

import pytest
import requests

from skiptrace.sandbox import (
    SKIPTRACE_PATH,
    SandboxConfig,
    SandboxServer,
    SandboxStats,
    answer,
    has_unit,
    item_key,
    match_decision,
    max_in_window,
    strip_unit,
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
    "bad", [{"fault": "explode"}, {"nope": 1}, {"match_rate": 2}, {"latency_s": "x"}, [1]]
)
def test_config_endpoint_refuses_bad_updates_without_applying_them(server, bad):
    resp = requests.post(server.url + "/_sandbox/config", json=bad, timeout=5)
    assert resp.status_code == 400 and resp.json()["status"]["text"]
    assert server.config == SandboxConfig()


# -- the management command -------------------------------------------------------------------------


def test_command_refuses_a_host_that_is_not_loopback():
    pytest.importorskip("django")
    from django.core.management import CommandError, call_command

    from skiptrace.management.commands.batchdata_sandbox import Command

    for host in ("0.0.0.0", "10.0.0.5", "example.com"):
        with pytest.raises(CommandError, match="loopback"):
            call_command(Command(), host=host, port=0)


def test_command_serves_until_sigterm_and_exits_cleanly():
    pytest.importorskip("django")
    from django.core.management import call_command

    from skiptrace.management.commands.batchdata_sandbox import Command

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
