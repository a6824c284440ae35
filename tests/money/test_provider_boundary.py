"""The provider boundary fails closed: unreadable answers are billed and never paid twice, the spend
is the provider's bill (matchCount), the breaker is read right before the POST, and V3 is spoken.

Against the bundled simulator (``devtools.sandbox``), which can answer V1 or V3 by path, unreadable
200s, and a matchCount above the per-person matches, and which counts what it would bill.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from io import StringIO
from pathlib import Path

import pytest
import responses
from django.core.management import call_command

from contacts.models import Lead, Phone
from skiptrace import guards, service
from skiptrace.intake import LeadInput
from skiptrace.models import CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.provider import BatchDataClient, ProviderError, TraceRequest, parse_response
from skiptrace.reports import run_report
from skiptrace.runs import run_create, run_resume
from skiptrace.service import BatchOutcome, Policy
from skiptrace.worker import Worker
from tests import fakes
from tests.fakes import drain, spend_cents

pytestmark = pytest.mark.django_db

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "batchdata"
V1_PATH = "/api/v1/property/skip-trace"
V3_PATH = "/api/v3/property/skip-trace"
MAX_STEPS = 400


def make_leads(n: int, prefix: str = "B") -> list[LeadInput]:
    return fakes.leads(n, prefix, "Elm", first_number=200)


def create(clock, leads_, label: str = "boundary") -> Run:
    return fakes.create(clock, leads_, label)


@pytest.fixture(params=[V1_PATH, V3_PATH], ids=["v1", "v3"])
def version_path(request, settings, sandbox):
    settings.BATCHDATA_SKIPTRACE_PATH = request.param
    return request.param


# --- contract: the example bodies parse exactly ----------------------------------------------------------


def _requests_of(path: Path) -> list[TraceRequest]:
    body = json.loads(path.read_text())
    return [
        TraceRequest(request_id=r["requestId"], street=r["propertyAddress"]["street"], city=r["propertyAddress"]["city"],
                     state=r["propertyAddress"]["state"], zip=r["propertyAddress"]["zip"],
                     first=(r.get("name") or {}).get("first", ""), last=(r.get("name") or {}).get("last", ""))
        for r in body["requests"]
    ]


def test_v3_example_parses_field_by_field():
    body = json.loads((DATA / "v3" / "response_batch.json").read_text())
    results, match_count, request_id = parse_response(body, _requests_of(DATA / "v3" / "request_batch.json"),
                                                      version="v3")
    assert (match_count, request_id) == (2, "01JD8Z6Q2W7K3M9R5T1V4X8Y0B")
    owner, none, entity = results
    assert [(p.name, p.first, p.last, p.property_owner, p.litigator, p.deceased) for p in owner.persons] == [
        ("Denise M Alvarez", "Denise", "Alvarez", True, False, False),
        ("Ramon Alvarez", "Ramon", "Alvarez", True, False, False),
    ]
    assert [(p.number, p.type, p.rank, p.carrier, p.tested, p.reachable, p.is_dnc, p.is_tcpa, p.person)
            for p in owner.phones] == [
        ("+18135550142", "Mobile", 1, "T-Mobile", True, True, False, False, 0),
        ("+18135550199", "Mobile", 2, "Verizon", True, True, True, False, 0),
        ("+18135550107", "Land Line", 3, "Frontier", False, False, False, True, 0),
        ("+18135550188", "Mobile", 1, "AT&T", True, True, False, False, 1),
    ]
    assert [(e.address, e.is_primary, e.rank, e.tested, e.person) for e in owner.emails] == [
        ("d.alvarez@example.com", True, 1, True, 0), ("denise.a@example.net", False, 2, False, 0)]
    assert owner.matched and not owner.litigator
    assert (none.matched, none.persons, none.phones, none.emails) == (False, (), (), ())
    assert entity.matched and entity.litigator
    assert [(p.name, p.property_owner, p.litigator) for p in entity.persons] == [("Karl Weber", False, True)]
    assert [(p.number, p.type, p.person) for p in entity.phones] == [("+12145550133", "Land Line", 0)]
    assert [e.address for e in entity.emails] == ["kweber@example.org"]


def test_v1_example_parses_field_by_field():
    body = json.loads((DATA / "response_batch.json").read_text())
    results, match_count, request_id = parse_response(body, _requests_of(DATA / "request_batch.json"))
    assert (match_count, request_id) == (2, "7hQmB2xZ0pLrT4c")
    first, none, litigator = results
    assert [(p.name, p.first, p.last, p.property_owner, p.litigator) for p in first.persons] == [
        ("denise alvarez", "denise", "alvarez", None, False)]
    assert [(p.number, p.type, p.confidence, p.carrier, p.tested, p.reachable, p.is_dnc, p.is_tcpa)
            for p in first.phones] == [
        ("+18135550142", "Mobile", 96, "T-Mobile", True, True, False, False),
        ("+18135550199", "Mobile", 71, "Verizon", True, True, True, False),
        ("+18135550107", "Land Line", 40, "Frontier", False, False, False, True),
    ]
    assert [e.address for e in first.emails] == ["d.alvarez@example.com", "denise.a@example.net"]
    assert not none.matched and none.persons == ()
    assert litigator.litigator and litigator.persons[0].litigator and litigator.phones == ()


@pytest.mark.parametrize("mutate", [
    lambda b: b["result"].pop("data"),
    lambda b: b["result"]["data"].pop(),
    lambda b: b["result"]["data"][0]["input"].update(requestId="A-9999"),
    lambda b: b["result"]["data"][0]["persons"][0].update(phones="8135550142"),
    lambda b: b["result"]["data"][0]["input"]["propertyAddress"].update(zip="99999"),
    lambda b: b["result"]["meta"]["results"].update(matchCount=7),
], ids=["no-data", "one-short", "echo-mismatch", "phones-not-list", "zip-mismatch", "matchcount-above-requests"])
def test_a_v3_body_that_does_not_fit_is_unreadable(mutate):
    body = json.loads((DATA / "v3" / "response_batch.json").read_text())
    mutate(body)
    with pytest.raises(ProviderError) as err:
        parse_response(body, _requests_of(DATA / "v3" / "request_batch.json"), version="v3")
    assert err.value.kind == "unreadable"


def test_the_wire_format_follows_the_path():
    v1 = BatchDataClient(base_url="http://127.0.0.1:9", path=V1_PATH, token="t" * 20)
    v3 = BatchDataClient(base_url="http://127.0.0.1:9", path=V3_PATH, token="t" * 20)
    request = [TraceRequest(request_id="1", street="1 Main St", city="Tampa", state="FL", zip="33610")]
    assert v1.build_body(request)["options"] == {"includeTCPABlacklistedPhones": True}
    assert "options" not in v3.build_body(request) and v3.api_version == "v3"
    with pytest.raises(ValueError, match="BATCHDATA_SKIPTRACE_PATH"):
        BatchDataClient(base_url="http://127.0.0.1:9", path="/api/v2/property/skip-trace", token="t" * 20)


# --- unreadable answers: billed, never paid twice ---------------------------------------------------------


def test_unreadable_answers_are_billed_and_each_input_is_sent_once(version_path, sandbox, clock, settings):
    sandbox.update_config(unreadable_rate=1.0)
    settings.CIRCUIT_MIN_SAMPLES = 1000  # the breaker is tested below; here every answer gets through
    leads = make_leads(40)
    run = create(clock, leads)
    worker = Worker(concurrency=1, clock=clock, batch_size=10, idle_sleep_s=0)
    for _ in range(4):  # time passes, backoffs end: still nothing is sent again by itself
        drain(worker)
        clock.advance(minutes=10)
    again = create(clock, leads, label="re-upload")
    drain(worker)
    stats = sandbox.stats.snapshot()
    assert stats["requests"] == 4 and max(stats["item_keys"].values()) == 1 and len(stats["item_keys"]) == 40
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    assert spend_cents() >= stats["billed_matches"] * price  # the recorded spend covers the bill
    assert guards.budget_spent_cents_today(clock()) == spend_cents()  # and the budget sees it
    assert set(ProviderCall.objects.values_list("state", flat=True)) == {CallState.UNREADABLE}
    for r in (run, again):
        r.refresh_from_db()
        assert r.state == "finished"
        assert set(RunItem.objects.filter(run=r).values_list("status", flat=True)) == {ItemStatus.FAILED}
    assert all(e.startswith("provider_unreadable:") for e in RunItem.objects.filter(run=run).values_list("last_error", flat=True))
    assert run_report(run)["unreadable_calls"] == 40
    # An explicit resume sends each input exactly once more.
    sandbox.update_config(unreadable_rate=0.0)
    run_resume(run=run, override_budget=False, now=clock())
    drain(worker)
    assert Counter(sandbox.stats.snapshot()["item_keys"].values()) == {2: 40}


def test_any_mix_of_unreadable_answers_sends_each_input_at_most_once(version_path, sandbox, clock, settings):
    sandbox.update_config(unreadable_rate=0.5, match_count_extra=1)
    settings.CIRCUIT_MIN_SAMPLES = 1000
    run = create(clock, make_leads(120))
    worker = Worker(concurrency=1, clock=clock, batch_size=10, idle_sleep_s=0)
    for _ in range(5):
        drain(worker)
        clock.advance(minutes=10)
    stats = sandbox.stats.snapshot()
    assert max(stats["item_keys"].values()) == 1 and len(stats["item_keys"]) == 120
    assert 0 < ProviderCall.objects.filter(state=CallState.UNREADABLE).count() < 120
    assert spend_cents(run) >= stats["billed_matches"] * settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    run.refresh_from_db()
    assert run.state == "finished" and run.done + run.failed == 120


# --- the spend is the bill -------------------------------------------------------------------------------------


def test_the_recorded_spend_equals_the_providers_bill(version_path, sandbox, clock, settings, api_client):
    sandbox.update_config(match_count_extra=1, match_rate=0.5)
    run = create(clock, make_leads(50))
    worker = Worker(concurrency=1, clock=clock, batch_size=10, idle_sleep_s=0)
    drain(worker)
    stats = sandbox.stats.snapshot()
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    assert stats["requests"] == 5
    matched = ProviderCall.objects.filter(matched=True).count()
    assert stats["billed_matches"] == matched + 5  # one above the per-person matches, per request
    assert spend_cents() == stats["billed_matches"] * price
    assert ProviderCall.objects.filter(bill_mismatch=True).count() == 5
    report = run_report(run)
    assert round(report["totals"]["cost_usd"] * 100) == spend_cents()
    metrics = api_client.get("/api/metrics").json()
    assert metrics["provider_bill_mismatch_total"] == 5
    assert metrics["budget_spent_cents_total"] == spend_cents()


def test_the_cap_holds_against_the_bill(version_path, sandbox, clock, settings):
    settings.SKIP_TRACE_DAILY_BUDGET_CENTS = 50
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    sandbox.update_config(match_count_extra=1, match_rate=0.3)
    run = create(clock, make_leads(40))
    worker = Worker(concurrency=1, clock=clock, batch_size=10, idle_sleep_s=0)
    drain(worker)
    billed = sandbox.stats.snapshot()["billed_matches"] * price
    assert spend_cents() == billed <= 50
    run.refresh_from_db()
    assert run.state == "paused" and run.reason == "daily_budget"


# --- V3 ---------------------------------------------------------------------------------------------------------


def test_a_v3_runs_contacts_are_the_persons_the_provider_returned(sandbox, clock, settings):
    settings.BATCHDATA_SKIPTRACE_PATH = V3_PATH
    run = create(clock, make_leads(60, prefix="V3"))
    worker = Worker(concurrency=1, clock=clock, batch_size=20, idle_sleep_s=0)
    drain(worker)
    stats = sandbox.stats.snapshot()
    assert stats.get("v3_requests", stats["requests"]) == 3
    several = 0
    for call in ProviderCall.objects.filter(run_id=run.run_id, state=CallState.COMPLETED):
        entry = json.loads(call.response_json)  # the data[] entry as received
        persons = entry.get("persons") or []
        lead = Lead.objects.get(lead_id=call.lead_id)
        numbers = {"+1" + p["number"] for person in persons for p in person.get("phones") or []}
        assert set(Phone.objects.filter(lead=lead).values_list("number", flat=True)) == numbers
        stored = json.loads(call.parsed_contacts_json)["persons"]
        assert sorted(p["name"] for p in stored) == sorted(p["name"]["full"] for p in persons)
        owners_first = [p["propertyOwner"] is True for p in stored]
        assert owners_first == sorted(owners_first, reverse=True)
        several += len(persons) > 1
    assert several > 0  # the sandbox returns more than one person for some properties
    run.refresh_from_db()
    assert run.state == "finished" and run.done == 60


def test_v3_insufficient_balance_fails_closed_until_an_operator_acts(sandbox, clock, settings):
    settings.BATCHDATA_SKIPTRACE_PATH = V3_PATH
    sandbox.update_config(fault="403_balance")
    run = create(clock, make_leads(5))
    worker = Worker(concurrency=1, clock=clock, batch_size=5, idle_sleep_s=0)
    drain(worker)
    run.refresh_from_db()
    assert run.state == "paused" and run.reason == "provider_out_of_credits"
    assert guards.breaker_state(clock()) == "open"
    assert spend_cents() == 0 and sandbox.stats.snapshot()["requests"] == 1


# --- skiptrace_reparse: served after a parser fix, without paying again -----------------------------------------


def test_reparse_serves_stored_answers_without_a_new_provider_call(clock, settings, monkeypatch):
    from skiptrace import provider
    from skiptrace.provider import v1

    settings.BATCHDATA_BASE_URL = "http://127.0.0.1:9"
    settings.CIRCUIT_MIN_SAMPLES = 1000
    body = json.loads((DATA / "response_batch.json").read_text())
    leads = [LeadInput(lead_id="R-1", first_name="Denise", last_name="Alvarez", street="4410 Oak Hollow Dr",
                       city="Tampa", state="FL", zip="33610"),
             LeadInput(lead_id="R-2", street="77 Bayview Ter Apt 3", city="Baltimore", state="MD", zip="21224",
                       first_name="Sam", last_name="Lee"),
             LeadInput(lead_id="R-3", first_name="Harold", last_name="Kim", street="1200 Commerce Pkwy",
                       city="Dallas", state="TX", zip="75247")]
    for person in body["results"]["persons"]:
        person.pop("requestId", None)
    real = v1.parse_person

    def broken(i, person, req):  # a parser bug: today's answers cannot be read
        raise provider.unreadable("parser bug: phoneNumbers[0].number")

    monkeypatch.setattr(v1, "parse_person", broken)
    settings.SANITIZED_RETRY_ENABLED = False
    run = run_create(source_label="reparse", leads=leads, policy=Policy(retry_sanitized=False), now=clock()).run
    worker = Worker(concurrency=1, clock=clock, batch_size=10, idle_sleep_s=0)
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "http://127.0.0.1:9/api/v1/property/skip-trace", json=body)
        drain(worker)
        assert len(mock.calls) == 1
    run.refresh_from_db()
    assert run.state == "finished" and run.failed == 3
    price = settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    assert spend_cents() == 3 * price  # outcome unknown: every call at its estimate

    monkeypatch.setattr(v1, "parse_person", real)  # the parser fix
    out = StringIO()
    with responses.RequestsMock():  # any provider request would fail this test
        call_command("skiptrace_reparse", stdout=out)
    assert "3 items served without a new provider call" in out.getvalue()
    run.refresh_from_db()
    assert (run.done, run.failed) == (3, 0)
    assert set(ProviderCall.objects.values_list("state", flat=True)) == {CallState.COMPLETED}
    assert spend_cents() == 2 * price  # the bill is known now: matchCount 2
    assert Phone.objects.filter(lead_id="R-1").count() == 3
    assert run_report(run)["totals"]["done"] == 3
    # A second reparse finds nothing; a new run of the same leads is served from the cache, for free.
    out = StringIO()
    call_command("skiptrace_reparse", stdout=out)
    assert "read 0 unreadable" in out.getvalue()
    again = run_create(source_label="again", leads=leads, policy=Policy(retry_sanitized=False), now=clock()).run
    drain(worker)
    again.refresh_from_db()
    assert again.cache_hits == 3 and ProviderCall.objects.count() == 3


# --- the breaker is read at the last moment -----------------------------------------------------------------------


def _reserve(clock, n: int = 3):
    create(clock, make_leads(n, prefix="L"))
    items = service.items_claim(limit=n, now=clock(), worker_id="t")
    client = BatchDataClient.from_settings()
    outcome = BatchOutcome()
    reserved = service.batch_reserve(items, client=client, now=clock(), outcome=outcome)
    assert reserved is not None and len(reserved.calls) == n
    return reserved, client, outcome


def test_a_batch_that_finds_the_breaker_open_before_its_post_goes_back_unsent(sandbox, clock, settings):
    reserved, client, outcome = _reserve(clock)
    guards.breaker_record(ok=False, now=clock(), kind="auth")  # another worker's request opened it meanwhile
    service.batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id="t")
    assert sandbox.stats.snapshot()["requests"] == 0
    calls = list(ProviderCall.objects.all())
    assert {(c.state, c.cost_cents, c.sent_at) for c in calls} == {(CallState.ERRORED, 0, None)}
    assert set(RunItem.objects.values_list("status", flat=True)) == {ItemStatus.QUEUED}
    assert Run.objects.get().reason == "circuit_open" and outcome.circuit_open


def test_the_breakers_probe_is_sent_although_the_breaker_is_open(sandbox, clock, settings):
    settings.CIRCUIT_PROBE_INTERVAL_S = 60
    guards.breaker_record(ok=False, now=clock(), kind="auth")
    clock.advance(seconds=61)
    reserved, client, outcome = _reserve(clock)
    assert reserved.probe
    service.batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id="t")
    assert sandbox.stats.snapshot()["requests"] == 1 and guards.breaker_state(clock()) == "closed"


def test_a_batch_never_sends_once_its_lease_could_have_been_reaped(sandbox, clock, settings):
    reserved, client, outcome = _reserve(clock)
    reserved.reserved_at -= service.lease_seconds()  # the waits took as long as the lease
    service.batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id="t")
    assert sandbox.stats.snapshot()["requests"] == 0
    assert {(c.state, c.sent_at) for c in ProviderCall.objects.all()} == {(CallState.ERRORED, None)}
    assert set(RunItem.objects.values_list("status", flat=True)) == {ItemStatus.QUEUED}


@pytest.mark.django_db(transaction=True)
def test_at_a_full_error_rate_the_fleet_stops_at_the_breaker_not_after_it(sandbox, settings):
    settings.CIRCUIT_MIN_SAMPLES = 5
    settings.CIRCUIT_BREAKER_ERROR_RATE = 0.5
    settings.CIRCUIT_PROBE_INTERVAL_S = 600
    settings.SKIP_TRACE_CONCURRENCY = 4
    sandbox.update_config(fault="500", latency_s=0.05)
    run_create(source_label="errors", leads=make_leads(40, prefix="E"), policy=Policy())
    worker = Worker(concurrency=4, batch_size=1, idle_sleep_s=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and guards.breaker_state() == "closed":
        time.sleep(0.05)
    time.sleep(1.0)  # batches admitted before it opened had their chance to leave
    worker.shutdown = True
    thread.join(timeout=30)
    assert guards.breaker_state() == "open"
    # 5 samples open it; at most the 3 other requests already on the wire may follow.
    assert sandbox.stats.snapshot()["requests"] <= settings.CIRCUIT_MIN_SAMPLES + settings.SKIP_TRACE_CONCURRENCY - 1


def test_a_number_shared_with_a_litigator_is_never_callable():
    from skiptrace.dialer import callable_phones

    body = {"result": {"data": [{"input": {"requestId": "1"}, "meta": {"matched": True}, "persons": [
        {"propertyOwner": True, "name": {"full": "Ann Owner"}, "phones": [{"number": "8135550142", "type": "Mobile"}]},
        {"propertyOwner": False, "litigator": True, "name": {"full": "Bob Suer"},
         "phones": [{"number": "8135550142", "type": "Mobile"}]},
    ]}], "meta": {"results": {"matchCount": 1}}}}
    [result], _, _ = parse_response(body, [TraceRequest("1", "1 Main St", "Tampa", "FL", "33610")], version="v3")
    assert [(p.number, p.person) for p in result.phones] == [("+18135550142", 0), ("+18135550142", 1)]
    assert callable_phones(result.to_contacts()) == ([], 1)
