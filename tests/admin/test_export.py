"""The contacts export opens cleanly in a spreadsheet and follows every rule of the dialer CSV
(skiptrace/dialer.py): exact header order, UTF-8 with BOM, every field quoted, CRLF, formula-leading cells
prefixed with ', 10-digit phones, DNC/TCPA numbers never in Phone1..3. Read back with the csv
module always, and through LibreOffice (headless) when ``soffice`` is installed."""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from django.utils import timezone

from contacts.export import dialer_csv_response, lead_dialer_rows
from contacts.models import Email, Lead, Phone
from skiptrace.dialer import DIALER_HEADER
from skiptrace.intake import LeadInput
from skiptrace.reports import artifact_paths
from skiptrace.runs import run_create
from skiptrace.service import Policy
from skiptrace.worker import Worker

pytestmark = pytest.mark.django_db

EXPORT = "/admin/contacts/lead/export/"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
PHONE_COLUMNS = slice(3, 6)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Logins here test permissions, not password strength: skip the deliberately slow hasher."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_lead(lead_id: str, *, owner: str, address: str, phones=(), emails=(), cached: bool = False,
              checked_at=None) -> Lead:
    """A lead with phone rows whose DNC status was checked at ``checked_at`` (default: now, fresh)."""
    now = timezone.now()
    lead = Lead.objects.create(lead_id=lead_id, owner=owner, address=address, source="batchdata", cached=cached,
                               contacts_updated_at=now)
    Phone.objects.bulk_create(
        Phone(lead=lead, number=number, type=type_, is_dnc=dnc, is_tcpa=tcpa, confidence=confidence, position=n,
              dnc_checked_at=checked_at or now)
        for n, (number, type_, dnc, tcpa, confidence) in enumerate(phones)
    )
    Email.objects.bulk_create(
        Email(lead=lead, address=address_, is_primary=primary, position=n)
        for n, (address_, primary) in enumerate(emails)
    )
    return lead


@pytest.fixture
def tricky_leads():
    make_lead(
        "A-1", owner="José Núñez", address="4410 Oak Hollow Dr, Tampa, FL 33610",
        phones=[("+18135550101", "Landline", False, False, 95), ("+18135550102", "Mobile", True, False, 99),
                ("+18135550103", "Mobile", False, False, 60), ("+18135550104", "Mobile", False, True, 80),
                ("+18135550105", "Mobile", False, False, 90), ("+18135550106", "Landline", False, False, 10)],
        emails=[("second@example.com", False), ("first@example.com", True), ("third@example.com", False),
                ("fourth@example.com", False)],
    )
    make_lead(  # every cell a spreadsheet could run as a formula
        "=HYPERLINK(\"http://evil\")", owner="=1+2", address="-12 Minus St, Tampa, FL 33610",
        phones=[("+17275550199", "Mobile", False, False, 70)], emails=[("+tag@example.com", True)], cached=True,
    )
    make_lead("@SUM(A1)", owner="+Evil Corp LLC", address="\tTabbed Rd", phones=[("+17275550200", "Landline", True, True, 50)])
    make_lead("CR-1", owner="\rCarriage Return", address="王小明 1 Main St")
    make_lead("Z-1", owner="Zoë Ærøskøbing", address="1 Ånd Ave, Bergen", phones=[("(727) 555-0300", "Mobile", False, False, None)])
    # a number listed twice, once flagged DNC: it is left out altogether
    make_lead("D-1", owner="Dup Number", address="9 Dup St",
              phones=[("+18135550400", "Mobile", False, False, 90), ("+18135550400", "Mobile", True, False, 90)])


def exported_bytes(admin_client, **params) -> bytes:
    response = admin_client.get(EXPORT, params)
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return b"".join(response.streaming_content)


def quoted_fields(text: str) -> list[list[str]]:
    """Split CSV text by hand, asserting that every field is quoted and every record ends in CRLF."""
    records, record, i = [], [], 0
    while i < len(text):
        assert text[i] == '"', f"unquoted field at offset {i}: {text[i:i + 20]!r}"
        i += 1
        value = []
        while True:
            j = text.index('"', i)
            value.append(text[i:j])
            if text.startswith('""', j):
                value.append('"')
                i = j + 2
                continue
            i = j + 1
            break
        record.append("".join(value))
        if text.startswith(",", i):
            i += 1
        else:
            assert text.startswith("\r\n", i), f"record does not end in CRLF at offset {i}"
            records.append(record)
            record, i = [], i + 2
    return records


def test_export_follows_every_rule_of_the_dialer_csv(admin_client, tricky_leads):
    body = exported_bytes(admin_client)
    assert body.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM: Excel reads the file as UTF-8
    text = body.decode("utf-8")[1:]
    records = quoted_fields(text)
    assert records == list(csv.reader(io.StringIO(text, newline="")))
    assert records[0] == DIALER_HEADER
    rows = {r[0]: r for r in records[1:]}
    assert len(rows) == 6 and all(len(r) == len(DIALER_HEADER) for r in records)

    for row in records[1:]:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), f"formula-leading cell {cell!r}"
        for cell in row[PHONE_COLUMNS]:
            assert cell == "" or (len(cell) == 10 and cell.isdigit())

    # mobile first, then by confidence; DNC and TCPA left out and counted
    assert rows["A-1"][3:13] == ["8135550105", "8135550103", "8135550101", "first@example.com", "second@example.com",
                                 "third@example.com", "batchdata", "batchdata", "no", "2"]
    assert rows["A-1"][1:3] == ["4410 Oak Hollow Dr, Tampa, FL 33610", "José Núñez"]
    formula = rows["'=HYPERLINK(\"http://evil\")"]
    assert formula[1:4] == ["'-12 Minus St, Tampa, FL 33610", "'=1+2", "7275550199"]
    assert formula[6] == "'+tag@example.com" and formula[11] == "yes"
    assert rows["'@SUM(A1)"][1:6] == ["'\tTabbed Rd", "'+Evil Corp LLC", "", "", ""]
    assert rows["'@SUM(A1)"][12] == "1"
    assert rows["CR-1"][1:3] == ["王小明 1 Main St", "'\rCarriage Return"]
    assert rows["Z-1"][2:4] == ["Zoë Ærøskøbing", "7275550300"]
    assert rows["D-1"][3] == "" and rows["D-1"][12] == "1"


def test_dnc_and_tcpa_numbers_never_reach_phone1_to_3(admin_client, tricky_leads):
    flagged = {p.number[-10:] for p in Phone.objects.all() if p.is_dnc or p.is_tcpa}
    records = list(csv.reader(io.StringIO(exported_bytes(admin_client).decode("utf-8-sig"))))
    for row in records[1:]:
        assert not flagged & set(row[PHONE_COLUMNS])


def test_export_streams_in_chunks_with_a_constant_number_of_queries(django_assert_max_num_queries, tricky_leads):
    with django_assert_max_num_queries(3):  # leads, their phones, their emails
        rows = list(lead_dialer_rows(Lead.objects.order_by("lead_id")))
    assert len(rows) == 6
    response = dialer_csv_response(Lead.objects.order_by("lead_id"), filename="x.csv")
    assert response["Content-Disposition"] == 'attachment; filename="x.csv"'
    chunks = list(response.streaming_content)
    assert chunks[0].startswith(b"\xef\xbb\xbf\"LeadID\"")


def test_export_matches_the_runs_enriched_csv_for_the_same_contacts(admin_client, sandbox):
    leads = [LeadInput(lead_id=f"M-{i}", first_name="Pat", last_name=f"Lee{i}", street=f"{10 + i} Elm St",
                       city="Tampa", state="FL", zip="33610") for i in range(8)]
    run = run_create(source_label="m", leads=leads, policy=Policy()).run
    worker = Worker(concurrency=1, run_id=run.run_id)
    while worker.process_one_batch():
        pass
    _, csv_path = artifact_paths(run.run_id)
    enriched = csv_path.read_bytes()
    exported = exported_bytes(admin_client, run=run.run_id)
    assert exported.splitlines()[0] == enriched.splitlines()[0]
    assert sorted(exported.splitlines()[1:]) == sorted(enriched.splitlines()[1:])


# --- a real spreadsheet --------------------------------------------------------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


def soffice(args: list[str], profile: Path) -> None:
    subprocess.run(
        [SOFFICE, f"-env:UserInstallation=file://{profile}", "--headless", "--norestore", *args],
        check=True, capture_output=True, timeout=120, env={**os.environ, "HOME": str(profile)},
    )


@pytest.mark.slow
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_opens_the_export_with_every_cell_as_written(admin_client, tricky_leads, tmp_path):
    """Open the export in LibreOffice Calc the way a user does (comma, double quote, UTF-8), save it
    as a spreadsheet, then read the cells back: same columns in the same order, names intact, phones
    still 10 digits, and no cell evaluated as a formula (``'=1+2`` stays text, never ``3``)."""
    source = tmp_path / "contacts.csv"
    source.write_bytes(exported_bytes(admin_client))
    profile = tmp_path / "lo-profile"
    # 44 = comma, 34 = double quote, 76 = UTF-8, 1 = first line; then the defaults, "detect special numbers" off.
    soffice(["--infilter=CSV:44,34,76,1,,0,false,false,false,false", "--convert-to", "xlsx",
             "--outdir", str(tmp_path / "xlsx"), str(source)], profile)
    sheet = tmp_path / "xlsx" / "contacts.xlsx"
    assert sheet.exists()
    soffice(["--convert-to", "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,true,true,false",
             "--outdir", str(tmp_path / "back"), str(sheet)], profile)
    back = list(csv.reader(io.StringIO((tmp_path / "back" / "contacts.csv").read_text(encoding="utf-8-sig"))))
    original = list(csv.reader(io.StringIO(source.read_text(encoding="utf-8-sig"))))
    assert back[0] == DIALER_HEADER

    def lines(row: list[str]) -> list[str]:  # Calc stores a cell's CR as LF
        return [cell.replace("\r\n", "\n").replace("\r", "\n") for cell in row]

    assert [lines(row) for row in back] == [lines(row) for row in original]
    owners = {row[0]: row[2] for row in back[1:]}
    assert owners["A-1"] == "José Núñez" and owners["Z-1"] == "Zoë Ærøskøbing"
    assert owners["'=HYPERLINK(\"http://evil\")"] == "'=1+2"  # text, not 3


def test_numbers_of_a_litigator_or_deceased_person_never_reach_phone1_to_3(admin_client,
                                                                          django_assert_max_num_queries):
    lead = make_lead("P-1", owner="Denise Alvarez", address="4410 Oak Hollow Dr, Tampa, FL 33610",
                     phones=[("+18135550501", "Mobile", False, False, None),
                             ("+18135550502", "Mobile", False, False, None),
                             ("+18135550503", "Land Line", False, False, None)])
    phones = Phone.objects.filter(lead=lead)
    phones.filter(number="+18135550501").update(person_name="Harold Vance", person_is_owner=False,
                                                person_litigator=True)
    phones.filter(number="+18135550502").update(person_name="Margaret Alvarez", person_deceased=True)
    phones.filter(number="+18135550503").update(person_name="Denise Alvarez", person_is_owner=True)
    with django_assert_max_num_queries(3):
        rows = list(lead_dialer_rows(Lead.objects.order_by("lead_id")))
    assert rows[0][3:6] == ["8135550503", "", ""] and rows[0][12] == "2"
    records = list(csv.reader(io.StringIO(exported_bytes(admin_client).decode("utf-8-sig"))))
    assert records[1][3:6] == ["8135550503", "", ""] and records[1][12] == "2"
