"""BatchData V3 keeps every person of an answer: each phone and email says whose it is, and a
litigator's or deceased person's numbers are never callable, in every path that reads them: the
Phone rows, the dialer CSV functions, a run's enriched.csv, the console export, the contacts API
and the lead page of the ops console. Contacts stored before V3 (no persons) still read as before."""

from __future__ import annotations

import copy
import csv
import io
import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from contacts.export import lead_dialer_rows
from contacts.models import Email, Lead, Phone
from contacts.services import ContactsUpdate, leads_contacts_save
from skiptrace.dialer import DIALER_HEADER, callable_phones, contact_cells, dialer_row
from skiptrace.models import ProviderCall, Run, RunItem
from skiptrace.reports import iter_run_dialer_rows

pytestmark = pytest.mark.django_db

LEADS = "/admin/contacts/lead/"
ADDRESS = "4410 Oak Hollow Dr, Tampa, FL 33610"
OWNER = "Denise Alvarez"

OWNER_MOBILE = "+18135550142"
OWNER_LANDLINE = "+18135550143"
OWNER_DNC = "+18135550146"
LITIGATOR_MOBILE = "+18135550144"
LITIGATOR_LANDLINE = "+18135550147"
DECEASED_MOBILE = "+18135550145"
NEVER_DIALED = {LITIGATOR_MOBILE, LITIGATOR_LANDLINE, DECEASED_MOBILE, OWNER_DNC}


def v3_phone(number, type_="Mobile", *, person, rank=None, dnc=False, tcpa=False, carrier=None, tested=None,
             reachable=None):
    return {"number": number, "type": type_, "isDoNotCall": dnc, "isTcpa": tcpa, "confidence": None,
            "rank": rank, "carrier": carrier, "tested": tested, "reachable": reachable, "person": person}


def v3_email(address, *, person, primary=False, rank=None, tested=None):
    return {"address": address, "isPrimary": primary, "confidence": None, "rank": rank, "tested": tested,
            "person": person}


# The owner first; a relative who is not an owner and is a known litigator, with numbers; a deceased
# co-resident, with a number. The litigator's and the deceased's numbers are mobiles ranked above the
# owner's landline: left in, they would be dialed first.
V3_CONTACTS = {
    "matched": True,
    "litigator": True,
    "persons": [
        {"name": "Denise M Alvarez", "first": "Denise", "last": "Alvarez", "propertyOwner": True,
         "litigator": False, "deceased": False},
        {"name": "Harold Vance", "first": "Harold", "last": "Vance", "propertyOwner": False,
         "litigator": True, "deceased": False},
        {"name": "Margaret Alvarez", "first": "Margaret", "last": "Alvarez", "propertyOwner": False,
         "litigator": False, "deceased": True},
    ],
    "phones": [
        v3_phone(OWNER_MOBILE, person=0, rank=1, carrier="T-Mobile", tested=True, reachable=True),
        v3_phone(LITIGATOR_MOBILE, person=1, rank=2, carrier="Verizon Wireless", tested=True, reachable=True),
        v3_phone(DECEASED_MOBILE, person=2, rank=3, carrier="AT&T Mobility", tested=False, reachable=None),
        v3_phone(OWNER_DNC, person=0, rank=4, dnc=True),
        v3_phone(OWNER_LANDLINE, "Land Line", person=0, rank=5, carrier="Frontier", tested=True,
                 reachable=False),
        v3_phone(LITIGATOR_LANDLINE, "Land Line", person=1, rank=6),
    ],
    "emails": [
        v3_email("d.alvarez@example.com", person=0, primary=True, rank=1, tested=True),
        v3_email("h.vance@example.com", person=1, rank=2, tested=False),
    ],
}
V3_PHONES = ["8135550142", "8135550143", ""]
V3_EXCLUDED = "4"  # the litigator's two, the deceased's one, the owner's DNC number

# What a cache entry written before V3 holds: no persons, no rank/carrier/tested/reachable/person.
OLD_CONTACTS = {
    "matched": True,
    "litigator": False,
    "phones": [
        {"number": "+17275550101", "type": "Land Line", "isDoNotCall": False, "isTcpa": False,
         "confidence": 95},
        {"number": "+17275550102", "type": "Mobile", "isDoNotCall": True, "isTcpa": False, "confidence": 99},
        {"number": "+17275550103", "type": "Mobile", "isDoNotCall": False, "isTcpa": False, "confidence": 60},
    ],
    "emails": [{"address": "old@example.com", "isPrimary": True, "confidence": 80}],
}
OLD_ROW = ["O-1", ADDRESS, OWNER, "7275550103", "7275550101", "", "old@example.com", "", "",
           "batchdata", "batchdata", "no", "1", "0"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def save(lead_id: str, contacts: dict, *, call_id: int | None = None) -> Lead:
    Lead.objects.get_or_create(lead_id=lead_id, defaults={"address": ADDRESS, "owner": OWNER})
    leads_contacts_save(
        [ContactsUpdate(lead_id=lead_id, run_id=None, contacts=contacts, provider_call_id=call_id,
                        cached=False, stale=False)],
        now=timezone.now(),
    )
    return Lead.objects.get(lead_id=lead_id)


def as_dict(row: list[str]) -> dict[str, str]:
    return dict(zip(DIALER_HEADER, row, strict=True))


def export_rows(leads) -> dict[str, list[str]]:
    return {row[0]: row for row in lead_dialer_rows(leads)}


def admin_export(client) -> dict[str, list[str]]:
    response = client.get(LEADS + "export/")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    assert rows[0] == DIALER_HEADER
    return {row[0]: row for row in rows[1:]}


# --- storage ----------------------------------------------------------------------------------------


def test_phone_rows_carry_their_person_and_the_v3_fields():
    save("V-1", V3_CONTACTS)
    phones = {p.number: p for p in Phone.objects.filter(lead_id="V-1")}
    assert list(Phone.objects.filter(lead_id="V-1").values_list("number", flat=True)) == [
        p["number"] for p in V3_CONTACTS["phones"]]  # provider order kept

    owner = phones[OWNER_MOBILE]
    assert (owner.person_name, owner.person_is_owner, owner.person_litigator, owner.person_deceased) == (
        "Denise M Alvarez", True, False, False)
    assert (owner.rank, owner.carrier, owner.tested, owner.reachable) == (1, "T-Mobile", True, True)
    assert owner.callable

    litigator = phones[LITIGATOR_MOBILE]
    assert (litigator.person_name, litigator.person_is_owner, litigator.person_litigator,
            litigator.person_deceased) == ("Harold Vance", False, True, False)
    assert (litigator.rank, litigator.carrier) == (2, "Verizon Wireless")
    deceased = phones[DECEASED_MOBILE]
    assert (deceased.person_name, deceased.person_is_owner, deceased.person_litigator,
            deceased.person_deceased) == ("Margaret Alvarez", False, False, True)
    assert (deceased.tested, deceased.reachable) == (False, None)

    assert {n for n, p in phones.items() if not p.callable} == NEVER_DIALED
    assert phones[OWNER_LANDLINE].callable and phones[OWNER_LANDLINE].type == "Landline"  # "Land Line" normalized

    emails = list(Email.objects.filter(lead_id="V-1"))
    assert [(e.address, e.person_name, e.person_is_owner, e.rank, e.tested) for e in emails] == [
        ("d.alvarez@example.com", "Denise M Alvarez", True, 1, True),
        ("h.vance@example.com", "Harold Vance", False, 2, False),
    ]


def test_old_shaped_contacts_save_with_no_person_and_null_v3_fields():
    save("O-1", OLD_CONTACTS)
    rows = list(Phone.objects.filter(lead_id="O-1").values_list(
        "number", "confidence", "is_dnc", "rank", "carrier", "tested", "reachable", "person_name",
        "person_is_owner", "person_litigator", "person_deceased"))
    assert rows == [
        ("+17275550101", 95, False, None, None, None, None, "", None, False, False),
        ("+17275550102", 99, True, None, None, None, None, "", None, False, False),
        ("+17275550103", 60, False, None, None, None, None, "", None, False, False),
    ]
    emails = Email.objects.filter(lead_id="O-1")
    assert list(emails.values_list("rank", "tested", "person_name", "person_is_owner")) == [
        (None, None, "", None)]


def test_a_v1_answer_with_one_person_and_no_ranks_saves_its_person():
    v1 = {"matched": True, "litigator": False,
          "persons": [{"name": "Owen Price", "first": "Owen", "last": "Price", "propertyOwner": None,
                       "litigator": False, "deceased": False}],
          "phones": [{"number": "+14105550100", "type": "Mobile", "isDoNotCall": False, "isTcpa": False,
                      "confidence": 88, "rank": None, "carrier": None, "tested": None, "reachable": None,
                      "person": 0}],
          "emails": [{"address": "owen@example.com", "isPrimary": True, "confidence": 70, "rank": None,
                      "tested": None, "person": 0}]}
    save("P-1", v1)
    phone = Phone.objects.get(lead_id="P-1")
    assert (phone.person_name, phone.person_is_owner, phone.confidence, phone.rank, phone.callable) == (
        "Owen Price", None, 88, None, True)
    assert as_dict(export_rows(Lead.objects.filter(lead_id="P-1"))["P-1"])["Phone1"] == "4105550100"


def test_a_re_save_replaces_the_person_fields():
    save("V-2", V3_CONTACTS, call_id=None)
    save("V-2", OLD_CONTACTS, call_id=None)
    assert not Phone.objects.filter(lead_id="V-2").exclude(person_name="").exists()
    assert Phone.objects.filter(lead_id="V-2").count() == len(OLD_CONTACTS["phones"])


# --- the dialer rule --------------------------------------------------------------------------------------


def test_dialer_functions_leave_out_litigator_and_deceased_numbers_and_count_them():
    numbers, excluded = callable_phones(V3_CONTACTS)
    assert numbers == ["8135550142", "8135550143"]
    assert excluded == int(V3_EXCLUDED)

    cells, excluded_cell, stale_cell = contact_cells(V3_CONTACTS)
    assert cells[:3] == V3_PHONES and excluded_cell == V3_EXCLUDED and stale_cell == "0"

    row = as_dict(dialer_row(lead_id="V-1", address=ADDRESS, owner=OWNER, contacts=V3_CONTACTS, cached=False))
    assert [row["Phone1"], row["Phone2"], row["Phone3"]] == V3_PHONES
    assert row["DNC_Excluded"] == V3_EXCLUDED
    assert (row["Email1"], row["Email2"]) == ("d.alvarez@example.com", "h.vance@example.com")
    assert not {n[2:] for n in NEVER_DIALED} & {row["Phone1"], row["Phone2"], row["Phone3"]}


def test_a_deceased_property_owners_numbers_are_not_callable_either():
    contacts = copy.deepcopy(V3_CONTACTS)
    contacts["persons"][0]["deceased"] = True
    contacts["litigator"] = True
    assert callable_phones(contacts) == ([], 6)


def test_a_number_shared_with_a_litigator_is_never_dialed_and_counted_once():
    contacts = copy.deepcopy(V3_CONTACTS)
    contacts["phones"].append(v3_phone(OWNER_MOBILE, person=1))  # the owner's mobile, also the litigator's
    numbers, excluded = callable_phones(contacts)
    assert numbers == ["8135550143"]
    assert excluded == int(V3_EXCLUDED) + 1


def test_a_phone_of_no_known_person_in_a_litigator_answer_is_left_out_everywhere(admin_client):
    contacts = copy.deepcopy(V3_CONTACTS)
    contacts["phones"] += [v3_phone("+18135550190", person=None), v3_phone("+18135550191", person=7),
                           v3_phone("+18135550192", person=None)]
    contacts["phones"][-1].pop("person")
    numbers, excluded = callable_phones(contacts)
    assert numbers == ["8135550142", "8135550143"] and excluded == int(V3_EXCLUDED) + 3

    save("U-1", contacts)
    unknown = Phone.objects.get(lead_id="U-1", number="+18135550190")
    assert (unknown.person_name, unknown.person_litigator, unknown.callable) == ("", True, False)
    row = as_dict(export_rows(Lead.objects.filter(lead_id="U-1"))["U-1"])
    assert [row["Phone1"], row["Phone2"], row["Phone3"]] == V3_PHONES
    assert row["DNC_Excluded"] == str(int(V3_EXCLUDED) + 3)


def test_a_bad_person_index_never_points_at_another_person():
    contacts = {"matched": True, "litigator": False,
                "persons": [{"name": "A", "propertyOwner": True, "litigator": False, "deceased": False},
                            {"name": "B", "propertyOwner": False, "litigator": False, "deceased": True}],
                "phones": [v3_phone("+18135550201", person=-1), v3_phone("+18135550202", person=True),
                           v3_phone("+18135550203", person="1"), v3_phone("+18135550204", person=1)],
                "emails": []}
    assert callable_phones(contacts) == (["8135550201", "8135550202", "8135550203"], 1)
    save("B-1", contacts)
    assert list(Phone.objects.filter(lead_id="B-1").values_list("person_name", "person_deceased")) == [
        ("", False), ("", False), ("", False), ("B", True)]


def test_old_shaped_contacts_give_the_same_row_as_before():
    row = dialer_row(lead_id="O-1", address=ADDRESS, owner=OWNER, contacts=OLD_CONTACTS, cached=False)
    assert row == OLD_ROW


# --- the three CSV paths agree ------------------------------------------------------------------------------


def make_run_item(run: Run, lead_id: str, contacts: dict, position: int) -> None:
    call = ProviderCall.objects.create(
        provider="batchdata", idempotency_key=f"key-{lead_id}", signature=f"sig-{lead_id}", lead_id=lead_id,
        run_id=run.run_id, request_json="{}", state="completed", batch_id="batch-1",
        budget_day=timezone.now().date(), parsed_contacts_json=json.dumps(contacts), finished_at=timezone.now(),
    )
    RunItem.objects.create(run=run, lead_id=lead_id, status="done", idem_key=f"idem-{lead_id}",
                           provider_call=call, position=position, address_display=ADDRESS,
                           owner_display=OWNER)


def test_enriched_csv_console_export_and_admin_export_leave_the_same_numbers_out(admin_client):
    run = Run.objects.create(run_id="run-v3", source_label="v3")
    make_run_item(run, "V-1", V3_CONTACTS, 1)
    make_run_item(run, "O-1", OLD_CONTACTS, 2)
    save("V-1", V3_CONTACTS)
    save("O-1", OLD_CONTACTS)

    enriched = {row[0]: row for row in iter_run_dialer_rows(run)}
    console = export_rows(Lead.objects.order_by("lead_id"))
    downloaded = admin_export(admin_client)
    for rows in (enriched, console, downloaded):
        v3 = as_dict(rows["V-1"])
        assert [v3["Phone1"], v3["Phone2"], v3["Phone3"]] == V3_PHONES
        assert v3["DNC_Excluded"] == V3_EXCLUDED
        assert rows["O-1"] == OLD_ROW
    assert enriched == console == downloaded


def test_the_console_export_reads_the_person_flags_of_the_rows_not_only_dnc(admin_client):
    lead = Lead.objects.create(lead_id="R-1", address=ADDRESS, owner=OWNER, source="batchdata")
    now = timezone.now()
    Phone.objects.bulk_create([
        Phone(lead=lead, number="+18135550301", type="Mobile", person_name="Harold Vance",
              person_is_owner=False, person_litigator=True, position=0, dnc_checked_at=now),
        Phone(lead=lead, number="+18135550302", type="Mobile", person_name="Margaret Alvarez",
              person_deceased=True, position=1, dnc_checked_at=now),
        Phone(lead=lead, number="+18135550303", type="Land Line", person_name="Denise M Alvarez",
              person_is_owner=True, position=2, dnc_checked_at=now),
    ])
    row = as_dict(admin_export(admin_client)["R-1"])
    assert [row["Phone1"], row["Phone2"], row["Phone3"]] == ["8135550303", "", ""]
    assert row["DNC_Excluded"] == "2"


def test_a_lead_with_only_litigator_or_deceased_numbers_has_no_callable_phone(admin_client):
    contacts = copy.deepcopy(V3_CONTACTS)
    contacts["phones"] = [p for p in contacts["phones"] if p["person"] != 0]
    save("X-1", contacts)
    save("V-1", V3_CONTACTS)
    yes = admin_client.get(LEADS, {"has_phone": "yes"}).context["cl"].result_list
    excluded_only = admin_client.get(LEADS, {"has_phone": "dnc_only"}).context["cl"].result_list
    assert [lead.lead_id for lead in yes] == ["V-1"]
    assert [lead.lead_id for lead in excluded_only] == ["X-1"]


# --- the contacts API -----------------------------------------------------------------------------------


def test_contacts_api_gives_each_phone_and_email_its_person(api_client):
    save("V-1", V3_CONTACTS)
    body = api_client.get("/api/leads/V-1/contacts").json()
    phones = {p["number"]: p for p in body["phones"]}
    assert list(phones) == [p["number"] for p in V3_CONTACTS["phones"]]
    checked_at = phones[OWNER_MOBILE].pop("dncCheckedAt")
    assert checked_at.endswith("Z") and phones[OWNER_MOBILE].pop("dncStale") is False
    assert phones[OWNER_MOBILE] == {
        "number": OWNER_MOBILE, "type": "Mobile", "isDoNotCall": False, "isTcpa": False, "confidence": None,
        "source": "batchdata", "rank": 1, "carrier": "T-Mobile", "tested": True, "reachable": True,
        "person": {"name": "Denise M Alvarez", "propertyOwner": True, "litigator": False, "deceased": False},
        "callable": True,
    }
    assert phones[LITIGATOR_MOBILE]["person"] == {
        "name": "Harold Vance", "propertyOwner": False, "litigator": True, "deceased": False}
    assert phones[DECEASED_MOBILE]["person"]["deceased"] is True
    assert {n for n, p in phones.items() if not p["callable"]} == NEVER_DIALED
    assert body["emails"][1] == {
        "address": "h.vance@example.com", "isPrimary": False, "confidence": None, "source": "batchdata",
        "rank": 2, "tested": False, "person": {"name": "Harold Vance", "propertyOwner": False},
    }


def test_contacts_api_for_old_shaped_contacts_keeps_its_keys_with_null_persons(api_client):
    save("O-1", OLD_CONTACTS)
    body = api_client.get("/api/leads/O-1/contacts").json()
    assert body["phones"][0].pop("dncCheckedAt") and body["phones"][0].pop("dncStale") is False
    assert body["phones"][0] == {
        "number": "+17275550101", "type": "Landline", "isDoNotCall": False, "isTcpa": False,
        "confidence": 95, "source": "batchdata", "rank": None, "carrier": None, "tested": None,
        "reachable": None, "person": None, "callable": True,
    }
    assert body["phones"][1]["callable"] is False  # DNC
    assert body["emails"] == [{"address": "old@example.com", "isPrimary": True, "confidence": 80,
                               "source": "batchdata", "rank": None, "tested": None, "person": None}]


# --- the lead page ------------------------------------------------------------------------------------------


def test_lead_page_shows_whose_number_it_is_with_the_flags(admin_client):
    save("V-1", V3_CONTACTS)
    response = admin_client.get(f"{LEADS}V-1/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Denise M Alvarez · owner" in page
    assert "Harold Vance · not owner" in page and "Margaret Alvarez · not owner" in page
    assert page.count(">litigator<") == 2  # the litigator's two numbers (an email shows its person only)
    assert page.count(">deceased<") == 1
    assert page.count(">excluded<") == 4 and page.count(">callable<") == 2
    for column in ("person", "rank", "carrier", "tested", "reachable"):
        assert re.search(rf'<th class="column-{column}">{column.capitalize()}\s*</th>', page), column
    assert "T-Mobile" in page and "Verizon Wireless" in page and "AT&amp;T Mobility" in page
    assert "(813) 555-0142" in page  # numbers shown as before
    assert "DNC/TCPA excluded: 4 (3 of a litigator or deceased person)" in page
    assert "d.alvarez@example.com" in page


def test_lead_page_says_why_each_number_has_its_place(admin_client):
    save("V-1", V3_CONTACTS)
    page = admin_client.get(f"{LEADS}V-1/change/").content.decode()
    order = re.findall(r"<li>(\(\d{3}\) \d{3}-\d{4}) — ([^<]*)</li>", page)
    assert order == [
        ("(813) 555-0142", "Phone1: property owner · tested reachable mobile · rank 1"),
        ("(813) 555-0143", "Phone2: property owner · known unreachable · rank 5"),
        ("(813) 555-0146", "not dialed: on DNC"),  # the others in the same order: owners' first
        ("(813) 555-0144", "not dialed: person is a litigator"),
        ("(813) 555-0145", "not dialed: person is deceased"),
        ("(813) 555-0147", "not dialed: person is a litigator"),
    ]
    assert "DNC status stale: 0" in page


def test_lead_page_of_old_shaped_contacts_renders_without_persons(admin_client):
    save("O-1", OLD_CONTACTS)
    response = admin_client.get(f"{LEADS}O-1/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert ">litigator<" not in page and ">deceased<" not in page and "not owner" not in page
    assert "DNC/TCPA excluded: 1" in page and "of a litigator or deceased person" not in page


def test_lead_page_renders_for_a_staff_user_who_may_view_leads(client, django_user_model):
    save("V-1", V3_CONTACTS)
    user = django_user_model.objects.create_user("viewer", password="pw-123456", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_lead"))
    client.login(username="viewer", password="pw-123456")
    response = client.get(f"{LEADS}V-1/change/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Denise M Alvarez" in page and "Harold Vance" in page
    assert page.count(">excluded<") == 4
