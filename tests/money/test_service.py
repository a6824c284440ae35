"""The money path: one provider call per normalized input, reserved before sent, billed right."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests
import responses

from skiptrace import money as service
from skiptrace.intake import LeadInput
from skiptrace.models import CacheEntry, CallState, ItemStatus, ProviderCall, Run, RunItem
from skiptrace.money import Policy, counters, reserve, send
from skiptrace.normalize import idempotency_key
from skiptrace.runs import run_create, run_resume
from skiptrace.worker import Worker

pytestmark = pytest.mark.django_db

URL = "http://127.0.0.1:9/api/v1/property/skip-trace"


def lead(lead_id: str, street: str = "4410 Oak Hollow Dr", first: str = "Denise", last: str = "Alvarez",
         city: str = "Tampa", state: str = "FL", zip: str = "33610") -> LeadInput:  # noqa: A002
    return LeadInput(lead_id=lead_id, first_name=first, last_name=last, street=street, city=city, state=state, zip=zip)


class FakeBatchData:
    """A `responses` callback answering like BatchData v1: one person per request, in order.

    ``behaviour`` maps a word in the street to what the provider does for it: "none" (unmatched),
    "empty" (matched, no contacts); anything else matches with one mobile and one email.
    """

    def __init__(self, behaviour: dict[str, str] | None = None) -> None:
        self.behaviour = behaviour or {}
        self.bodies: list[dict] = []
        self.on_request = None  # optional hook(body) run when a request arrives

    @property
    def items(self) -> list[dict]:
        return [r for body in self.bodies for r in body["requests"]]

    def __call__(self, request):
        body = json.loads(request.body)
        self.bodies.append(body)
        if self.on_request:
            self.on_request(body)
        persons = []
        for n, req in enumerate(body["requests"]):
            street = req["propertyAddress"]["street"]
            mode = next((m for word, m in self.behaviour.items() if word in street), "match")
            echo = {"propertyAddress": req["propertyAddress"]}
            if mode == "none":
                persons.append({**echo, "meta": {"matched": False, "error": False}})
                continue
            phones = [] if mode == "empty" else [
                {"number": f"813555{len(self.bodies) % 10}{n:03d}", "type": "Mobile", "score": 90, "dnc": False}
            ]
            emails = [] if mode == "empty" else [{"email": f"owner{n}@example.com"}]
            persons.append({**echo, "_id": f"p{n}", "phoneNumbers": phones, "emails": emails,
                            "meta": {"matched": True, "error": False}})
        matched = sum(1 for p in persons if p["meta"]["matched"])
        answer = {"status": {"code": 200, "text": "OK"},
                  "results": {"persons": persons, "meta": {"results": {"requestCount": len(persons), "matchCount": matched},
                                                           "requestId": f"req{len(self.bodies)}"}}}
        return 200, {}, json.dumps(answer)


def work(clock=None, **kwargs) -> Worker:
    """Work every claimable item in this thread (what the worker's threads do)."""
    worker = Worker(concurrency=1, clock=clock or (lambda: dt.datetime.now(dt.UTC)), **kwargs)
    while worker.process_one_batch():
        pass
    return worker


def create(*leads_: LeadInput, policy: Policy | None = None, now=None) -> Run:
    return run_create(source_label="t", leads=list(leads_), policy=policy or Policy(), now=now).run


def items(run: Run) -> list[RunItem]:
    return list(RunItem.objects.filter(run=run).order_by("position"))


# --- idempotency and caches ----------------------------------------------------------------------


def test_two_identical_leads_in_one_run_make_one_provider_item(provider):
    run = create(lead("A-1"), lead("A-2", street="4410 OAK HOLLOW DR.", first="DENISE", last="ALVAREZ", zip="33610-4021"))
    work()
    assert len(provider.items) == 1
    assert ProviderCall.objects.count() == 1
    a, b = items(run)
    assert a.status == b.status == ItemStatus.DONE
    assert a.provider_call_id == b.provider_call_id


def test_it_serves_second_identical_lead_from_cache_without_a_provider_call(provider):
    first = create(lead("A-1"))
    work()
    second = create(lead("A-1"))
    work()
    assert len(provider.items) == 1
    assert ProviderCall.objects.count() == 1
    item = items(second)[0]
    assert item.status == ItemStatus.DONE and item.cached
    assert item.provider_call_id == items(first)[0].provider_call_id
    second.refresh_from_db()
    assert second.cache_hits == 1 and second.cost_cents == 0


def test_l2_serves_when_l1_is_empty(provider):
    create(lead("A-1"))
    work()
    service.L1.clear()  # another process: only the database knows
    run = create(lead("A-1"))
    work()
    assert len(provider.items) == 1
    assert items(run)[0].cached


def test_first_call_key_is_sha256_of_signature_and_reposting_adds_no_row(provider):
    create(lead("A-1"))
    work()
    call = ProviderCall.objects.get()
    assert call.idempotency_key == idempotency_key(call.signature) == RunItem.objects.get().idem_key
    for _ in range(3):
        create(lead("A-1"))
        work()
    assert ProviderCall.objects.count() == 1


def test_expired_cache_is_refetched_exactly_once(provider, clock):
    create(lead("A-1"), now=clock())
    work(clock)
    clock.advance(days=8)  # CACHE_TTL_DAYS = 7
    service.L1.clear()
    run = create(lead("A-1"), lead("A-2"), now=clock())
    work(clock)
    create(lead("A-1"), now=clock())
    work(clock)
    assert len(provider.items) == 2
    calls = list(ProviderCall.objects.order_by("id"))
    assert [c.generation for c in calls] == [0, 1]
    assert calls[1].idempotency_key == idempotency_key(calls[0].signature, 1) != calls[0].idempotency_key
    entry = CacheEntry.objects.get()
    assert entry.provider_call_id == calls[1].pk and entry.ttl_expires_at > clock()
    assert {i.provider_call_id for i in items(run)} == {calls[1].pk}


def test_force_refetches_once_per_run_even_with_duplicates(provider):
    create(lead("A-1"))
    work()
    forced = create(lead("A-1"), lead("A-2"), policy=Policy(force=True))
    work()
    assert len(provider.items) == 2
    assert {i.cached for i in items(forced)} == {False}


# --- reserved before sent ------------------------------------------------------------------------


def test_call_rows_are_committed_as_sent_before_the_request_reaches_the_provider(provider):
    seen = []

    def check(body):
        seen.append(list(ProviderCall.objects.values_list("state", flat=True)))

    provider.on_request = check
    create(lead("A-1"), lead("B-1", street="12 Elm St"))
    work()
    assert seen == [[CallState.SENT, CallState.SENT]]
    assert set(ProviderCall.objects.values_list("state", flat=True)) == {CallState.COMPLETED}


def test_entity_owner_is_sent_without_a_person_name(provider):
    create(lead("E-1", first="", last="SUNRISE HOLDINGS LLC", street="1200 Commerce Pkwy"))
    work()
    assert "name" not in provider.items[0]


def test_cost_is_price_per_matched_record_only(provider, settings):
    provider.behaviour = {"NOBODY": "none"}
    run = create(lead("A-1"), lead("B-1", street="9 Nobody Ln"))
    work()
    costs = dict(ProviderCall.objects.values_list("lead_id", "cost_cents"))
    assert costs == {"A-1": settings.SKIP_TRACE_COST_PER_MATCH_CENTS, "B-1": 0}
    run.refresh_from_db()
    assert run.cost_cents == settings.SKIP_TRACE_COST_PER_MATCH_CENTS


# --- sanitized retry -----------------------------------------------------------------------------


def test_zero_contacts_with_unit_retries_once_without_the_unit_and_bills_both(provider, settings):
    provider.behaviour = {"APT": "none"}
    run = create(lead("U-1", street="77 Bayview Ter Apt 3", city="Baltimore", state="MD", zip="21224"))
    work()
    assert [r["propertyAddress"]["street"] for r in provider.items] == ["77 BAYVIEW TER APT 3", "77 BAYVIEW TER"]
    first, second = ProviderCall.objects.order_by("id")
    assert first.label == service.PREDECESSOR_LABEL
    assert second.attempt_reason == "address_sanitized" and second.predecessor_id == first.pk
    item = items(run)[0]
    assert item.status == ItemStatus.DONE and item.provider_call_id == second.pk and item.predecessor_call_id == first.pk
    run.refresh_from_db()
    assert run.cost_cents == first.cost_cents + second.cost_cents == settings.SKIP_TRACE_COST_PER_MATCH_CENTS


def test_matched_but_empty_answer_with_unit_also_retries(provider):
    provider.behaviour = {"APT": "empty"}
    create(lead("U-1", street="77 Bayview Ter Apt 3"))
    work()
    assert len(provider.items) == 2
    assert ProviderCall.objects.filter(cost_cents__gt=0).count() == 2  # both matched: both billed


def test_sanitized_retry_happens_at_most_once(provider):
    provider.behaviour = {"BAYVIEW": "none"}
    run = create(lead("U-1", street="77 Bayview Ter Apt 3"))
    work()
    assert len(provider.items) == 2
    assert items(run)[0].status == ItemStatus.DONE


@pytest.mark.parametrize(
    ("street", "behaviour", "policy", "calls"),
    [
        ("77 Bayview Ter Apt 3", {}, Policy(), 1),  # contacts found: no retry
        ("77 Bayview Ter", {"BAYVIEW": "none"}, Policy(), 1),  # no unit marker: no retry
        ("77 Bayview Ter Apt 3", {"APT": "none"}, Policy(retry_sanitized=False), 1),  # policy off
    ],
)
def test_sanitized_retry_only_when_zero_contacts_and_a_unit(provider, street, behaviour, policy, calls):
    provider.behaviour = behaviour
    create(lead("U-1", street=street), policy=policy)
    work()
    assert len(provider.items) == calls


def test_rerun_of_a_sanitized_lead_is_served_from_cache_for_both_attempts(provider):
    provider.behaviour = {"APT": "none"}
    create(lead("U-1", street="77 Bayview Ter Apt 3"))
    work()
    run = create(lead("U-1", street="77 Bayview Ter Apt 3"))
    work()
    assert len(provider.items) == 2
    item = items(run)[0]
    assert item.cached and item.attempt_reason == "address_sanitized"


# --- provider faults -----------------------------------------------------------------------------


def _failing(exc):
    def callback(request):
        raise exc

    return callback


def test_lost_answer_is_costed_at_estimate_and_never_resent_by_itself(settings):
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=_failing(requests.exceptions.ReadTimeout("read timed out")))
        run = create(lead("A-1"))
        work()
        assert len(mock.calls) == 1
        again = create(lead("A-1"))
        work()
        assert len(mock.calls) == 1  # not re-sent by a new run either
    call = ProviderCall.objects.get()
    assert call.state == CallState.LOST and call.cost_cents == settings.SKIP_TRACE_COST_PER_MATCH_CENTS
    for r in (run, again):
        item = items(r)[0]
        assert item.status == ItemStatus.FAILED and item.last_error.startswith("provider_outcome_unknown")


def test_resume_of_a_lost_call_sends_it_once_more():
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=_failing(requests.exceptions.ReadTimeout("read timed out")))
        run = create(lead("A-1"))
        work()
    fake = FakeBatchData()
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, URL, callback=fake)
        assert run_resume(run=run, override_budget=False) == 1
        work()
    assert len(fake.items) == 1
    assert items(run)[0].status == ItemStatus.DONE
    assert list(ProviderCall.objects.order_by("id").values_list("state", "generation")) == [
        (CallState.LOST, 0), (CallState.COMPLETED, 1)]


def test_server_error_costs_nothing_and_retries_with_backoff(clock):
    fake = FakeBatchData()
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=500, json={"status": {"code": 500, "text": "boom"}})
        mock.add_callback(responses.POST, URL, callback=fake)
        run = create(lead("A-1"), now=clock())
        work(clock)
        item = items(run)[0]
        assert item.status == ItemStatus.QUEUED and item.not_before > clock() and item.attempt == 1
        clock.advance(minutes=5)
        work(clock)
    assert items(run)[0].status == ItemStatus.DONE
    assert list(ProviderCall.objects.order_by("id").values_list("state", "cost_cents")) == [
        (CallState.ERRORED, 0), (CallState.COMPLETED, 7)]


def test_an_unreadable_200_is_billed_and_failed_never_no_contacts(clock, settings):
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=200, json={"status": {"code": 200}, "results": {"people": []}})
        run = create(lead("A-1"), now=clock())
        work(clock)
    call = ProviderCall.objects.get()
    assert call.state == CallState.UNREADABLE and "provider_unreadable" in call.error_text
    assert call.cost_cents == settings.SKIP_TRACE_COST_PER_MATCH_CENTS  # the provider did the work
    assert json.loads(call.response_json) == {"status": {"code": 200}, "results": {"people": []}}  # kept for a reparse
    item = items(run)[0]
    assert item.status == ItemStatus.FAILED and item.last_error.startswith("provider_unreadable:")
    assert not CacheEntry.objects.exists()


def test_transient_errors_fail_the_item_with_a_reason_after_max_attempts(clock, settings):
    settings.SKIP_TRACE_MAX_ATTEMPTS = 2
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, URL, status=503, json={"status": {"code": 503, "text": "down"}})
        run = create(lead("A-1"), now=clock())
        for _ in range(3):
            work(clock)
            clock.advance(minutes=10)
    item = items(run)[0]
    assert item.status == ItemStatus.FAILED and item.last_error.startswith("provider_error: http_5xx")
    run.refresh_from_db()
    assert run.state == "finished"


def test_no_token_means_no_request_and_the_run_waits_saying_why(settings):
    settings.BATCHDATA_API_TOKEN = None
    with responses.RequestsMock() as mock:
        run = create(lead("A-1"))
        work()
        assert len(mock.calls) == 0
    run.refresh_from_db()
    assert run.reason == "provider_not_configured" and run.state == "paused"
    assert items(run)[0].status == ItemStatus.QUEUED


# --- leases --------------------------------------------------------------------------------------


def test_reaper_marks_sent_calls_lost_and_requeues_items_that_never_sent(clock, provider):
    run = create(lead("A-1"), lead("B-1", street="12 Elm St"), now=clock())
    claimed = service.items_claim(limit=1, now=clock(), worker_id="dead")
    outcome = service.BatchOutcome()
    reserved = service.batch_reserve(claimed, client=Worker(concurrency=1).client, now=clock(), outcome=outcome)
    ProviderCall.objects.filter(batch_id=reserved.batch_id).update(state=CallState.SENT, lease_until=clock())
    service.items_claim(limit=1, now=clock(), worker_id="dead")  # the second item: claimed, nothing reserved
    clock.advance(hours=1)
    result = service.leases_reap(now=clock())
    assert result == {"lost": 1, "failed": 1, "abandoned": 0, "requeued": 1}
    a, b = items(run)
    assert a.status == ItemStatus.FAILED and a.last_error.startswith("provider_outcome_unknown")
    assert b.status == ItemStatus.QUEUED
    work(clock)
    assert items(run)[1].status == ItemStatus.DONE
    assert len(provider.items) == 1  # only B-1: the lost call was not re-sent


def test_a_reservation_taken_back_by_the_reaper_is_never_sent(provider, clock):
    create(lead("A-1"), lead("B-1", street="12 Elm St"), now=clock())
    claimed = service.items_claim(limit=2, now=clock(), worker_id="slow")
    outcome = service.BatchOutcome()
    client = Worker(concurrency=1).client
    reserved = service.batch_reserve(claimed, client=client, now=clock(), outcome=outcome)
    # The worker stalls waiting for a slot past its lease; the reaper takes A-1's reservation back.
    ProviderCall.objects.filter(pk=reserved.calls[0].pk).update(state=CallState.ERRORED)
    service.batch_send(reserved, client=client, clock=clock, outcome=outcome, worker_id="slow")
    assert [r["propertyAddress"]["street"] for r in provider.items] == ["12 ELM ST"]


# --- run counters ----------------------------------------------------------------------------------


def test_a_big_runs_counters_are_recounted_on_a_spacing_and_it_still_finishes_at_once(provider, clock, monkeypatch):
    monkeypatch.setattr(counters, "EXACT_RECOUNT_MAX_ITEMS", 2)  # make a 5-lead run "big"
    run = create(*[lead(f"A-{n}", street=f"{100 + n} Oak St") for n in range(5)], now=clock())
    worker = Worker(concurrency=1, clock=clock, batch_size=2)
    assert worker.process_one_batch()
    run.refresh_from_db()
    assert (run.done, run.queued) == (0, 5)  # recounted at creation, not due again within 1 s
    clock.advance(seconds=service.RECOUNT_MIN_INTERVAL_S)
    assert worker.process_one_batch()
    run.refresh_from_db()
    assert (run.done, run.queued, run.finished_at) == (4, 1, None)  # due: a recount from the items
    assert worker.process_one_batch()  # the last lead, not due: the "anything left?" probe finishes it
    run.refresh_from_db()
    assert (run.done, run.queued, run.state, run.cost_cents) == (5, 0, "finished", 5 * 7)
    assert len(provider.items) == 5


def test_a_paused_big_runs_counters_catch_up_in_the_workers_housekeeping(provider, clock, monkeypatch):
    monkeypatch.setattr(counters, "EXACT_RECOUNT_MAX_ITEMS", 2)
    run = create(*[lead(f"A-{n}", street=f"{100 + n} Oak St") for n in range(5)], now=clock())
    worker = Worker(concurrency=1, clock=clock, batch_size=2)
    assert worker.process_one_batch()
    Run.objects.filter(run_id=run.run_id).update(paused_by_operator=True)  # no batch follows to count it
    run.refresh_from_db()
    assert run.done == 0
    clock.advance(seconds=service.STALE_COUNTERS_S + 1)
    worker.housekeeping(force=True)
    run.refresh_from_db()
    assert (run.done, run.queued, run.finished_at) == (2, 3, None)


def test_a_small_runs_counters_are_exact_after_every_batch(provider, clock):
    run = create(*[lead(f"A-{n}", street=f"{100 + n} Oak St") for n in range(3)], now=clock())
    worker = Worker(concurrency=1, clock=clock, batch_size=2)
    assert worker.process_one_batch()
    run.refresh_from_db()
    assert (run.done, run.queued, run.finished_at) == (2, 1, None)


# --- recording a paid answer ---------------------------------------------------------------------


class _Ticking:
    """A monotonic clock that the fake sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_recording_a_paid_answer_outlasts_a_long_busy_database():
    from django.db import OperationalError

    ticking, attempts = _Ticking(), []

    def record() -> None:
        attempts.append(ticking.now)
        if len(attempts) <= 30:  # ~50 s of "database is locked" (an upload holding the write lock)
            raise OperationalError("database is locked")

    send.retrying(record, sleep=ticking.sleep, monotonic=lambda: ticking.now, give_up_after_s=120)
    assert len(attempts) == 31 and 40 < ticking.now < 120


def test_recording_gives_up_when_the_lease_is_over_and_says_so():
    from django.db import OperationalError

    ticking = _Ticking()

    def record() -> None:
        raise OperationalError("database is locked")

    with pytest.raises(OperationalError):
        send.retrying(record, sleep=ticking.sleep, monotonic=lambda: ticking.now, give_up_after_s=30)
    assert 25 <= ticking.now <= 30


# --- contacts of a lead ----------------------------------------------------------------------------


def test_a_cached_rerun_keeps_the_leads_contact_rows_and_a_forced_refetch_replaces_them(provider):
    from contacts.models import Lead, Phone

    create(lead("A-1"))
    work()
    first_call = ProviderCall.objects.get()
    phones = list(Phone.objects.filter(lead_id="A-1").values_list("id", "number", "provider_call_id"))
    assert phones and all(call_id == first_call.pk for _, _, call_id in phones)

    rerun = create(lead("A-1"))
    work()
    saved = Lead.objects.get(lead_id="A-1")
    assert (saved.cached, saved.run_id, saved.provider_call_id) == (True, rerun.run_id, first_call.pk)
    assert list(Phone.objects.filter(lead_id="A-1").values_list("id", "number", "provider_call_id")) == phones

    create(lead("A-1"), policy=Policy(force=True))
    work()
    second_call = ProviderCall.objects.latest("id")
    assert second_call.pk != first_call.pk
    refreshed = list(Phone.objects.filter(lead_id="A-1").values_list("id", "provider_call_id"))
    assert refreshed and {call_id for _, call_id in refreshed} == {second_call.pk}
    assert not {pk for pk, _ in refreshed} & {pk for pk, _, _ in phones}  # new rows, from the new answer
    assert Lead.objects.get(lead_id="A-1").cached is False


def test_an_answer_committed_between_the_cache_lookup_and_the_call_check_is_not_paid_twice(provider, clock, monkeypatch):
    """Two workers, one signature (PostgreSQL, READ COMMITTED): worker 2 misses the cache, then
    worker 1's answer commits, then worker 2 reads the signature's calls and finds one final call.
    That must be a cache hit, not a second paid call."""
    create(lead("A-1"), now=clock())
    create(lead("B-1"), now=clock())  # the same owner and address: one signature
    client = Worker(concurrency=1).client
    first = service.items_claim(limit=1, now=clock(), worker_id="w1")
    reserved = service.batch_reserve(first, client=client, now=clock(), outcome=service.BatchOutcome())
    second = service.items_claim(limit=1, now=clock(), worker_id="w2")
    real = reserve.calls_by_signature

    def answer_lands_now(signatures, *, now, rows=None):  # noqa: ARG001 - the calls are read after the answer
        service.batch_send(reserved, client=client, clock=clock, outcome=service.BatchOutcome(), worker_id="w1")
        return real(signatures, now=now)

    monkeypatch.setattr(reserve, "calls_by_signature", answer_lands_now)
    outcome = service.BatchOutcome()
    assert service.batch_reserve(second, client=client, now=clock(), outcome=outcome) is None
    assert outcome.cached == 1
    assert len(provider.items) == 1 and ProviderCall.objects.count() == 1
    item = RunItem.objects.get(lead_id="B-1")
    assert (item.status, item.cached, item.provider_call_id) == (ItemStatus.DONE, True, reserved.calls[0].pk)
