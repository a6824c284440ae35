"""Contacts a compliant dialer can rely on: every rule with an injected clock.

- a phone's DNC status is as old as the answer that carried it (``dnc_checked_at``: the provider
  call's ``finished_at``; a cached re-run keeps it), and with ``DNC_MAX_AGE_DAYS`` (31) a status 32
  days old is stale, 30 days is not: stale numbers never reach Phone1..3 of any export (a run's
  enriched.csv, the console export, the API export) and are counted in ``DNC_Stale``;
- litigators' and deceased persons' numbers never reach Phone1..3;
- the ranking (owners first, then tested and reachable mobiles, then the provider's rank/score) on
  the bundled V1 and V3 examples;
- the wide profile's header and flags; the API export's profile, filters and errors;
- types normalized (Mobile / Landline / VoIP / Unknown), old "Land Line" values mapped.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest

from contacts.export import lead_dialer_rows
from contacts.models import Lead, Phone
from contacts.services import ContactsUpdate, leads_contacts_save
from skiptrace.dialer import (
    DIALER_HEADER,
    WIDE_HEADER,
    dialable_phones,
    dialer_row,
    fresh_after,
    freshness_cutoff,
    normalize_type,
    phone_plan,
)
from skiptrace.models import CacheEntry, ProviderCall, Run, RunItem
from skiptrace.provider import TraceRequest, parse_response
from skiptrace.reports import iter_run_dialer_rows, write_run_artifacts
from tests.unit.test_settings import start

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)
DATA_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "batchdata"
ADDRESS = "4410 Oak Hollow Dr, Tampa, FL 33610"
EXPORT_API = "/api/exports/contacts.csv"


def days_ago(days: float) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def phone(number, type_="Mobile", *, dnc=False, tcpa=False, confidence=None, rank=None, tested=None,
          reachable=None, person=None):
    p = {"number": number, "type": type_, "isDoNotCall": dnc, "isTcpa": tcpa, "confidence": confidence,
         "rank": rank, "carrier": None, "tested": tested, "reachable": reachable}
    if person is not None:
        p["person"] = person
    return p


def contacts(*phones, persons=None, emails=()):
    c = {"matched": True, "litigator": any(p.get("litigator") for p in persons or ()),
         "phones": list(phones), "emails": [{"address": a, "isPrimary": i == 0, "confidence": None}
                                             for i, a in enumerate(emails)]}
    if persons is not None:
        c["persons"] = persons
    return c


def person(name, *, owner=True, litigator=False, deceased=False):
    return {"name": name, "first": "", "last": "", "propertyOwner": owner, "litigator": litigator,
            "deceased": deceased}


def as_dict(row, header=DIALER_HEADER):
    return dict(zip(header, row, strict=True))


def seed_row(c, *, checked_at, now=NOW, max_age=None):
    return as_dict(dialer_row(lead_id="L1", address=ADDRESS, owner="Ann Lee", contacts=c, cached=False,
                              checked_at=checked_at, fresh_after=freshness_cutoff(now, max_age)))


def make_call(lead_id: str, contacts_: dict, *, finished_at: dt.datetime, run: Run | None = None) -> ProviderCall:
    return ProviderCall.objects.create(
        provider="batchdata", idempotency_key=f"key-{lead_id}-{finished_at.timestamp()}",
        signature=f"sig-{lead_id}", lead_id=lead_id, run_id=run.run_id if run else None, request_json="{}",
        state="completed", batch_id="b-1", budget_day=finished_at.date(), finished_at=finished_at,
        parsed_contacts_json=json.dumps(contacts_), cost_cents=7, estimate_cents=7,
    )


def save(lead_id: str, contacts_: dict, *, call: ProviderCall | None, cached: bool = False, now=NOW) -> Lead:
    Lead.objects.get_or_create(lead_id=lead_id, defaults={"address": ADDRESS, "owner": "Ann Lee",
                                                          "street": "4410 Oak Hollow Dr", "city": "Tampa",
                                                          "state": "FL", "zip": "33610", "first_name": "Ann",
                                                          "last_name": "Lee"})
    leads_contacts_save([ContactsUpdate(lead_id=lead_id, run_id=None, contacts=contacts_,
                                        provider_call_id=call.pk if call else None, cached=cached, stale=False)],
                        now=now)
    return Lead.objects.get(lead_id=lead_id)


def csv_rows(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


ONE_MOBILE = contacts(phone("+18135550142", confidence=90), emails=["ann@example.com"])


# --- the rule: 32 days stale, 30 days fresh ------------------------------------------------------------


@pytest.mark.parametrize(("age_days", "phone1", "stale"), [(30, "8135550142", "0"), (31, "8135550142", "0"),
                                                           (31.001, "", "1"), (32, "", "1"), (40, "", "1")])
def test_a_status_older_than_31_days_is_stale_and_left_out(age_days, phone1, stale):
    row = seed_row(ONE_MOBILE, checked_at=days_ago(age_days))
    assert row["Phone1"] == phone1
    assert row["DNC_Stale"] == stale
    assert row["DNC_Excluded"] == "0"
    assert row["Email1"] == "ann@example.com"  # emails are not affected


def test_the_maximum_age_is_a_setting_with_decimals_and_zero_makes_every_status_stale(settings):
    settings.DNC_MAX_AGE_DAYS = 0.5
    assert seed_row(ONE_MOBILE, checked_at=NOW - dt.timedelta(hours=11))["Phone1"] == "8135550142"
    assert seed_row(ONE_MOBILE, checked_at=NOW - dt.timedelta(hours=13))["Phone1"] == ""
    settings.DNC_MAX_AGE_DAYS = 0
    assert fresh_after(NOW) is None
    row = seed_row(ONE_MOBILE, checked_at=NOW)
    assert (row["Phone1"], row["DNC_Stale"]) == ("", "1")


def test_a_phone_without_a_dnc_time_is_stale_when_freshness_is_judged():
    assert seed_row(ONE_MOBILE, checked_at=None)["Phone1"] == ""


def test_a_flagged_number_counts_once_as_excluded_never_also_as_stale():
    c = contacts(phone("+18135550101", dnc=True), phone("+18135550102"), phone("+18135550103", tcpa=True))
    row = seed_row(c, checked_at=days_ago(40))
    assert (row["Phone1"], row["DNC_Excluded"], row["DNC_Stale"]) == ("", "2", "1")


@pytest.mark.parametrize(("key", "value"), [("DNC_MAX_AGE_DAYS", "abc"), ("DNC_MAX_AGE_DAYS", "-1"),
                                            ("DNC_MAX_AGE_DAYS", "nan")])
def test_a_bad_maximum_age_stops_start_up_naming_the_key(key, value, tmp_path):
    result = start({key: value}, tmp_path)
    assert result.returncode != 0
    assert key in result.stderr


def test_the_default_maximum_age_is_31_days(settings):
    assert settings.DNC_MAX_AGE_DAYS == 31.0
    assert "DNC_MAX_AGE_DAYS=31" in (Path(__file__).resolve().parents[2] / ".env.example").read_text()


# --- the DNC time: the answer's, kept by a cached re-run ----------------------------------------------


def test_phones_carry_the_time_of_the_answer_not_the_time_they_were_written():
    call = make_call("T-1", ONE_MOBILE, finished_at=days_ago(3))
    lead = save("T-1", ONE_MOBILE, call=call, now=NOW)
    assert lead.phones.get().dnc_checked_at == days_ago(3)


def test_a_cached_answer_keeps_the_cache_entrys_time_and_never_refreshes_the_dnc_time():
    call = make_call("T-2", ONE_MOBILE, finished_at=days_ago(20))
    CacheEntry.objects.create(provider="batchdata", idempotency_key="ck-T-2", payload_hash="h", response_json="{}",
                              parsed_contacts_json=json.dumps(ONE_MOBILE), ttl_expires_at=days_ago(13),
                              created_at=days_ago(20), signature="sig-T-2", provider_call=call)
    other = Lead.objects.create(lead_id="T-3", address=ADDRESS)
    # a lead served from that cache entry for the first time, 20 days after the provider's check
    lead = save("T-2b", ONE_MOBILE, call=call, cached=True, now=NOW)
    assert lead.phones.get().dnc_checked_at == days_ago(20)
    # a cached re-run of a lead whose contacts already come from that call keeps its rows and their time
    save("T-2b", ONE_MOBILE, call=call, cached=True, now=NOW + dt.timedelta(days=15))
    assert lead.phones.get().dnc_checked_at == days_ago(20)
    assert not other.phones.exists()
    # ... so 32 days after the check the number is stale in the export
    rows = {r[0]: as_dict(r) for r in lead_dialer_rows(Lead.objects.filter(lead_id="T-2b"), now=days_ago(20) + dt.timedelta(days=32))}
    assert (rows["T-2b"]["Phone1"], rows["T-2b"]["DNC_Stale"]) == ("", "1")


def test_a_fresh_answer_without_a_call_is_checked_now_a_cached_one_without_a_time_is_stale():
    assert save("T-4", ONE_MOBILE, call=None, cached=False).phones.get().dnc_checked_at == NOW
    assert save("T-5", ONE_MOBILE, call=None, cached=True).phones.get().dnc_checked_at is None


def test_an_answer_time_given_by_the_caller_wins():
    Lead.objects.create(lead_id="T-6", address=ADDRESS)
    leads_contacts_save([ContactsUpdate(lead_id="T-6", run_id=None, contacts=ONE_MOBILE, provider_call_id=None,
                                        cached=True, stale=False, answered_at=days_ago(9))], now=NOW)
    assert Phone.objects.get(lead_id="T-6").dnc_checked_at == days_ago(9)


# --- every export path: enriched.csv, console export, API export -------------------------------------


def make_run_item(run: Run, lead_id: str, call: ProviderCall, position: int, *, cached: bool = False) -> None:
    RunItem.objects.create(run=run, lead_id=lead_id, status="done", idem_key=f"i-{lead_id}", provider_call=call,
                           position=position, address_display=ADDRESS, owner_display="Ann Lee", cached=cached)


@pytest.fixture
def aged_leads():
    """Two leads answered 30 and 32 days before NOW, each in a run and stored as contacts."""
    run = Run.objects.create(run_id="run-aged", source_label="aged")
    for n, (lead_id, age) in enumerate((("A-30", 30), ("A-32", 32))):
        call = make_call(lead_id, ONE_MOBILE, finished_at=days_ago(age), run=run)
        make_run_item(run, lead_id, call, n)
        save(lead_id, ONE_MOBILE, call=call)
    return run


def test_enriched_csv_leaves_out_a_status_32_days_old_and_counts_it(aged_leads, settings):
    rows = {r[0]: as_dict(r) for r in iter_run_dialer_rows(aged_leads, now=NOW)}
    assert (rows["A-30"]["Phone1"], rows["A-30"]["DNC_Stale"]) == ("8135550142", "0")
    assert (rows["A-32"]["Phone1"], rows["A-32"]["DNC_Stale"]) == ("", "1")
    _, csv_path = write_run_artifacts(aged_leads, now=NOW)
    written = csv_rows(csv_path.read_bytes())
    assert written[0] == DIALER_HEADER and written[0][-2:] == ["DNC_Excluded", "DNC_Stale"]
    assert {r[0]: r[3] for r in written[1:]} == {"A-30": "8135550142", "A-32": ""}


def test_console_export_and_enriched_csv_agree_on_stale_numbers(aged_leads):
    enriched = {r[0]: r for r in iter_run_dialer_rows(aged_leads, now=NOW)}
    console = {r[0]: r for r in lead_dialer_rows(Lead.objects.all(), now=NOW)}
    assert enriched == console


def test_api_export_judges_freshness_now(aged_leads, api_client, monkeypatch):
    monkeypatch.setattr("contacts.views.timezone.now", lambda: NOW)
    response = api_client.get(EXPORT_API)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    rows = csv_rows(b"".join(response.streaming_content))
    assert rows[0] == DIALER_HEADER
    by_id = {r[0]: as_dict(r) for r in rows[1:]}
    assert by_id["A-30"]["Phone1"] == "8135550142" and by_id["A-32"]["Phone1"] == ""
    assert by_id["A-32"]["DNC_Stale"] == "1"


def test_contacts_api_says_when_the_status_was_checked_and_whether_it_is_stale(aged_leads, api_client, monkeypatch):
    monkeypatch.setattr("contacts.views.timezone.now", lambda: NOW)
    fresh = api_client.get("/api/leads/A-30/contacts").json()["phones"][0]
    stale = api_client.get("/api/leads/A-32/contacts").json()["phones"][0]
    assert fresh["dncCheckedAt"] == "2026-11-03T12:00:00Z" and fresh["dncStale"] is False and fresh["callable"]
    assert stale["dncCheckedAt"] == "2026-11-01T12:00:00Z" and stale["dncStale"] is True
    assert stale["callable"] is False and stale["isDoNotCall"] is False


# --- litigators and the deceased --------------------------------------------------------------------------


def test_litigator_and_deceased_numbers_never_reach_phone1_3_even_ranked_first():
    c = contacts(phone("+18135550201", rank=1, tested=True, reachable=True, person=1),
                 phone("+18135550202", rank=1, tested=True, reachable=True, person=2),
                 phone("+18135550203", "Land Line", rank=9, person=0),
                 persons=[person("Owner"), person("Plaintiff", litigator=True), person("Late", deceased=True)])
    row = seed_row(c, checked_at=NOW)
    assert [row["Phone1"], row["Phone2"], row["Phone3"]] == ["8135550203", "", ""]
    assert row["DNC_Excluded"] == "2"


# --- the ranking on the bundled examples ----------------------------------------------------------------


def example(version: str) -> tuple[dict, list[str], list[TraceRequest]]:
    folder = DATA_DIR / ("v3" if version == "v3" else "")
    requests = json.loads((folder / "request_batch.json").read_text())["requests"]
    reqs = [TraceRequest(request_id=r["requestId"], street=r["propertyAddress"]["street"],
                         city=r["propertyAddress"]["city"], state=r["propertyAddress"]["state"],
                         zip=r["propertyAddress"]["zip"], first=r.get("name", {}).get("first", ""),
                         last=r.get("name", {}).get("last", "")) for r in requests]
    body = json.loads((folder / "response_batch.json").read_text())
    return body, [r.request_id for r in reqs], reqs


def parsed(version: str, body: dict | None = None) -> list[dict]:
    original, _, reqs = example(version)
    results, _, _ = parse_response(body or original, reqs, version=version)
    return [r.to_contacts() for r in results]


def without_flags(body: dict, version: str) -> dict:
    """The example with every DNC/TCPA flag cleared: the order of all its numbers shows."""
    body = copy.deepcopy(body)
    persons = body["results"]["persons"] if version == "v1" else [p for e in body["result"]["data"]
                                                                   for p in e.get("persons", [])]
    for p in persons:
        for ph in p.get("phoneNumbers" if version == "v1" else "phones", []):
            ph["dnc"] = ph["tcpa"] = False
    return body


def phones_of(contacts_: dict) -> list[str]:
    return dialable_phones(contacts_, checked_at=NOW, fresh_after=freshness_cutoff(NOW))[0]


def test_v1_example_ranking():
    first, unmatched, litigator = parsed("v1")
    assert phones_of(first) == ["8135550142"]  # the DNC and the TCPA numbers are left out
    assert phones_of(unmatched) == [] and phones_of(litigator) == []
    body, _, _ = example("v1")
    first = parsed("v1", without_flags(body, "v1"))[0]
    # tested and reachable mobiles by score (96, 71), then the untested, unreachable landline
    assert phones_of(first) == ["8135550142", "8135550199", "8135550107"]


def test_v3_example_ranking():
    first, unmatched, entity = parsed("v3")
    # both owners' tested, reachable mobiles, each ranked 1, in provider order; DNC and TCPA left out
    assert phones_of(first) == ["8135550142", "8135550188"]
    assert phones_of(unmatched) == []
    assert phones_of(entity) == []  # the only person is a litigator
    body, _, _ = example("v3")
    first = parsed("v3", without_flags(body, "v3"))[0]
    # owners all: tested reachable mobiles by rank (1, 1, 2), the unreachable landline last
    assert phones_of(first) == ["8135550142", "8135550188", "8135550199", "8135550107"]


def test_owners_first_then_tested_reachable_mobiles_then_rank():
    c = contacts(
        phone("+18135550301", rank=1, tested=True, reachable=True, person=1),  # not an owner
        phone("+18135550302", "Land Line", rank=1, person=0),
        phone("+18135550303", rank=3, tested=False, reachable=None, person=0),
        phone("+18135550304", rank=4, tested=True, reachable=True, person=0),
        phone("+18135550305", rank=2, tested=True, reachable=False, person=0),
        phone("+18135550306", rank=2, tested=True, reachable=True, person=0),
        persons=[person("Owner"), person("Tenant", owner=False)],
    )
    order = [e.digits[-3:] for e in phone_plan(c)]
    assert order == ["306", "304", "303", "302", "305", "301"]
    row = seed_row(c, checked_at=NOW)
    assert [row["Phone1"], row["Phone2"], row["Phone3"]] == ["8135550306", "8135550304", "8135550303"]


# --- the wide profile --------------------------------------------------------------------------------------


def test_wide_header():
    phone_cols = [f"Phone{n}{s}" for n in range(1, 11) for s in ("", "_Type", "_DNC", "_TCPA", "_Owner", "_Flags")]
    assert WIDE_HEADER == ["LeadID", "Address", "Owner", *phone_cols, *[f"Email{n}" for n in range(1, 6)],
                           "Phone1_source", "Email1_source", "Cached", "DNC_Excluded", "DNC_Stale"]
    assert DIALER_HEADER == ["LeadID", "Address", "Owner", "Phone1", "Phone2", "Phone3", "Email1", "Email2",
                             "Email3", "Phone1_source", "Email1_source", "Cached", "DNC_Excluded", "DNC_Stale"]


def wide_row(c, *, checked_at=NOW, now=NOW):
    return as_dict(dialer_row(lead_id="L1", address=ADDRESS, owner="Ann Lee", contacts=c, cached=True,
                              checked_at=checked_at, fresh_after=freshness_cutoff(now), profile="wide"),
                   WIDE_HEADER)


def test_wide_lists_every_number_callable_first_and_flags_the_others():
    c = contacts(
        phone("+18135550401", dnc=True, rank=1, person=0),
        phone("+18135550402", "Land Line", rank=2, person=0),
        phone("+18135550403", tcpa=True, rank=3, person=0),
        phone("+18135550404", rank=1, tested=True, reachable=True, person=1),
        phone("+18135550405", "VoIP", rank=1, person=2),
        phone("+18135550406", rank=5, person=0),
        persons=[person("Denise Alvarez"), person("Harold Vance", owner=False, litigator=True),
                 person("Margaret Alvarez", owner=False, deceased=True)],
        emails=[f"e{i}@example.com" for i in range(7)],
    )
    row = wide_row(c)
    listed = [(row[f"Phone{n}"], row[f"Phone{n}_Type"], row[f"Phone{n}_DNC"], row[f"Phone{n}_TCPA"],
               row[f"Phone{n}_Owner"], row[f"Phone{n}_Flags"]) for n in range(1, 7)]
    assert listed == [
        ("8135550406", "Mobile", "no", "no", "Denise Alvarez", ""),
        ("8135550402", "Landline", "no", "no", "Denise Alvarez", ""),
        ("8135550401", "Mobile", "yes", "no", "Denise Alvarez", "dnc"),
        ("8135550403", "Mobile", "no", "yes", "Denise Alvarez", "tcpa"),
        ("8135550404", "Mobile", "no", "no", "Harold Vance", "litigator"),
        ("8135550405", "VoIP", "no", "no", "Margaret Alvarez", "deceased"),
    ]
    assert all(row[f"Phone{n}"] == "" for n in range(7, 11))
    assert [row[f"Email{n}"] for n in range(1, 6)] == [f"e{i}@example.com" for i in range(5)]
    assert (row["Cached"], row["DNC_Excluded"], row["DNC_Stale"]) == ("yes", "4", "0")


def test_wide_flags_a_stale_status_and_never_shows_it_unflagged():
    c = contacts(phone("+18135550501"), phone("+18135550502", dnc=True))
    row = wide_row(c, checked_at=days_ago(32))
    assert (row["Phone1"], row["Phone1_DNC"], row["Phone1_Flags"]) == ("8135550501", "stale", "dnc_stale")
    assert (row["Phone2"], row["Phone2_DNC"], row["Phone2_Flags"]) == ("8135550502", "yes", "dnc|dnc_stale")
    assert (row["DNC_Excluded"], row["DNC_Stale"]) == ("1", "1")
    for n in range(1, 3):  # every listed number that may not be dialed says so
        assert row[f"Phone{n}_Flags"]


def test_wide_keeps_ten_numbers_and_an_empty_lead_keeps_its_row():
    c = contacts(*[phone(f"+1813555{n:04d}", confidence=100 - n) for n in range(12)])
    row = wide_row(c)
    assert [row[f"Phone{n}"] for n in range(1, 11)] == [f"813555{n:04d}" for n in range(10)]
    empty = wide_row(None)
    assert all(v == "" for k, v in empty.items() if k.startswith(("Phone", "Email")))
    assert (empty["DNC_Excluded"], empty["DNC_Stale"]) == ("0", "0")


def test_wide_cells_are_formula_safe():
    c = contacts(phone("+18135550601", person=0), persons=[person("=HYPERLINK(\"x\")")], emails=["+x@example.com"])
    row = wide_row(c)
    assert row["Phone1_Owner"] == "'=HYPERLINK(\"x\")" and row["Email1"] == "'+x@example.com"


def test_api_export_streams_the_wide_profile_with_filters(aged_leads, api_client, monkeypatch):
    monkeypatch.setattr("contacts.views.timezone.now", lambda: NOW)
    response = api_client.get(EXPORT_API, {"profile": "wide", "run_id": "run-aged", "dnc_stale": "yes"})
    assert response.status_code == 200
    rows = csv_rows(b"".join(response.streaming_content))
    assert rows[0] == WIDE_HEADER
    assert [r[0] for r in rows[1:]] == ["A-32"]
    r = as_dict(rows[1], WIDE_HEADER)
    assert (r["Phone1"], r["Phone1_DNC"], r["Phone1_Flags"]) == ("8135550142", "stale", "dnc_stale")
    response = api_client.get(EXPORT_API, {"run_id": "run-other"})
    assert csv_rows(b"".join(response.streaming_content)) == [DIALER_HEADER]


@pytest.mark.parametrize(("params", "name"), [({"profile": "xl"}, "profile"), ({"has_phone": "maybe"}, "has_phone"),
                                              ({"dnc_stale": "1"}, "dnc_stale"), ({"run_id": "a\x00b"}, "run_id")])
def test_api_export_refuses_a_bad_profile_or_filter_naming_it(api_client, params, name):
    response = api_client.get(EXPORT_API, params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "ValidationError" and name in body["fields"] and name in body["detail"]


def test_api_export_needs_the_token(anon_client):
    assert anon_client.get(EXPORT_API).status_code == 401


# --- types -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "kind"), [("Mobile", "Mobile"), ("Land Line", "Landline"), ("Landline", "Landline"),
                                             ("landline", "Landline"), ("VoIP", "VoIP"), ("Non-Fixed VoIP", "VoIP"),
                                             ("Unknown", "Unknown"), ("pager", "Unknown"), (None, "Unknown"),
                                             ("", "Unknown"), (7, "Unknown")])
def test_types_are_normalized(value, kind):
    assert normalize_type(value) == kind


def test_types_are_stored_normalized_and_old_rows_read_mapped(api_client):
    lead = save("Y-1", contacts(phone("+18135550701", "Land Line")), call=None)
    assert lead.phones.get().type == "Landline"
    Phone.objects.filter(lead=lead).update(type="Land Line")  # a row stored before types were normalized
    assert api_client.get("/api/leads/Y-1/contacts").json()["phones"][0]["type"] == "Landline"
    row = as_dict(next(lead_dialer_rows(Lead.objects.filter(lead_id="Y-1"), profile="wide")), WIDE_HEADER)
    assert row["Phone1_Type"] == "Landline"


def test_the_fast_seed_path_and_the_plan_agree_on_random_contacts():
    import random

    rng = random.Random(18)
    types = ["Mobile", "Land Line", "VoIP", "Unknown", None]
    for _ in range(400):
        persons = [person(f"P{i}", owner=rng.choice([True, False, None]), litigator=rng.random() < 0.2,
                          deceased=rng.random() < 0.1) for i in range(rng.randint(0, 3))]
        phones = []
        for _ in range(rng.randint(0, 7)):
            p = phone(f"+1813555{rng.randint(0, 9):04d}", rng.choice(types), dnc=rng.random() < 0.2,
                      tcpa=rng.random() < 0.1, confidence=rng.choice([None, 10, 50, 90]),
                      rank=rng.choice([None, 1, 2, 3]), tested=rng.choice([True, False, None]),
                      reachable=rng.choice([True, False, None]), person=rng.choice([None, 0, 1, 2, 5]))
            if rng.random() < 0.3:
                p["dncCheckedAt"] = rng.choice([None, days_ago(10), days_ago(40)])
            phones.append(p)
        c = contacts(*phones, persons=persons or None)
        if persons and rng.random() < 0.3:
            c["litigator"] = True
        checked_at = rng.choice([None, days_ago(5), days_ago(35)])
        cut = rng.choice([None, freshness_cutoff(NOW)])
        plan = phone_plan(c, checked_at=checked_at, fresh_after=cut)
        expected = ([e.digits for e in plan if e.callable], sum(1 for e in plan if e.blocked),
                    sum(1 for e in plan if e.flags and not e.blocked))
        assert dialable_phones(c, checked_at=checked_at, fresh_after=cut) == expected, c


def test_a_finished_runs_files_are_written_again_once_a_number_in_them_went_stale(aged_leads):
    from skiptrace.reports import dnc_expiry, refresh_artifacts_if_stale

    Run.objects.filter(pk=aged_leads.pk).update(finished_at=days_ago(29))
    aged_leads.refresh_from_db()
    written_at = days_ago(29)
    _, csv_path = write_run_artifacts(aged_leads, now=written_at)
    aged_leads.refresh_from_db()
    assert aged_leads.report_written_at == written_at
    assert dnc_expiry(aged_leads) == days_ago(32) + dt.timedelta(days=31)  # the oldest answer's
    assert {r[0]: r[3] for r in csv_rows(csv_path.read_bytes())[1:]} == {"A-30": "8135550142", "A-32": "8135550142"}
    assert not refresh_artifacts_if_stale(aged_leads, now=days_ago(1.5))  # nothing stale yet
    assert refresh_artifacts_if_stale(aged_leads, now=NOW)
    assert {r[0]: r[3] for r in csv_rows(csv_path.read_bytes())[1:]} == {"A-30": "8135550142", "A-32": ""}
    aged_leads.refresh_from_db()
    assert not refresh_artifacts_if_stale(aged_leads, now=NOW)  # written after the expiry: kept


def test_the_migration_gives_existing_rows_their_calls_time_and_normalized_types():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("contacts.migrations.0003_phone_dnc_checked_at")
    call = make_call("M-1", ONE_MOBILE, finished_at=days_ago(12))
    lead = Lead.objects.create(lead_id="M-1", address=ADDRESS)
    Phone.objects.create(lead=lead, number="+18135550801", type="Land Line", provider_call=call)
    Phone.objects.create(lead=lead, number="+18135550802", type="Mobile", position=1)  # no call: stays unknown
    migration.forwards(apps, None)
    rows = list(Phone.objects.filter(lead=lead).order_by("position").values_list("type", "dnc_checked_at"))
    assert rows == [("Landline", days_ago(12)), ("Mobile", None)]
