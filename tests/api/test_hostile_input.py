"""Hostile input: every bad file or body gets a clear 4xx or a row-level failure, never a 5xx or a traceback.

CSV files go through the two real entry points: ``runs.run_create(leads=iter_csv_leads(...))`` and
``manage.py skiptrace_run FILE`` (``call_command``; once as a real process). JSON bodies go through
the HTTP API. A bad row becomes a ``failed`` item with ``invalid_input: <why>`` and never reaches
the provider, while the good rows of the same input are queued and run to ``done``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.client import MULTIPART_CONTENT

from contacts.models import Lead
from skiptrace import reports, runs
from skiptrace.intake import IntakeError, iter_csv_leads
from skiptrace.models import ProviderCall, Run, RunItem
from tests import fakes
from tests.helpers import assert_error

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
HEADER = "LeadID,First Name,Last Name,Street,City,State,Zip"
GOOD = "G-1,Dana,Reyes,100 ALWAYSMATCH Rd,Tampa,FL,33610"
GOOD2 = "G-2,Ann,Lee,200 ALWAYSMATCH Rd,Tampa,FL,33610"
SQL = "'; DROP TABLE provider_calls; --"
TABLES = ("provider_calls", "skiptrace_runs", "skiptrace_run_items", "skiptrace_cache", "leads")


# --- helpers ---------------------------------------------------------------------------------------


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


def create_from_csv(data: bytes) -> runs.CreatedRun:
    return runs.run_create(source_label="hostile", leads=iter_csv_leads(io.BytesIO(data)), policy=runs.default_policy())


def cli(tmp_path: Path, data: bytes, name: str = "leads.csv") -> tuple[str, str]:
    path = tmp_path / name
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    call_command("skiptrace_run", str(path), stdout=out, stderr=err)
    assert "Traceback" not in out.getvalue() + err.getvalue()
    return out.getvalue().strip(), err.getvalue()


def cli_refused(tmp_path: Path, data: bytes, match: str) -> str:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(CommandError, match=match) as caught:
        call_command("skiptrace_run", str(path), stdout=io.StringIO(), stderr=io.StringIO())
    assert "nothing was created" in str(caught.value)
    assert Run.objects.count() == 0 and RunItem.objects.count() == 0
    return str(caught.value)


def items(run_id: str) -> dict[str, RunItem]:
    return {i.lead_id: i for i in RunItem.objects.filter(run_id=run_id)}


def assert_failed_invalid(item: RunItem, why: str) -> None:
    assert item.status == "failed", (item.lead_id, item.status, item.last_error)
    assert item.last_error.startswith("invalid_input: "), item.last_error
    assert why in item.last_error, item.last_error


def assert_good_rows_run(run_id: str, lead_ids: tuple[str, ...] = ("G-1",)) -> None:
    by_id = items(run_id)
    assert all(by_id[i].status == "queued" for i in lead_ids), {i: by_id[i].status for i in lead_ids}
    work()
    by_id = items(run_id)
    assert all(by_id[i].status == "done" for i in lead_ids), {i: (by_id[i].status, by_id[i].last_error) for i in lead_ids}
    bad = [i for i in by_id.values() if i.lead_id not in lead_ids]
    assert not ProviderCall.objects.filter(lead_id__in=[i.lead_id for i in bad]).exists()


def assert_tables_intact() -> None:
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            cursor.fetchone()


def good_lead(n: int = 1, **overrides) -> dict:
    lead = {"lead_id": f"G-{n}", "first_name": "Dana", "last_name": "Reyes", "street": f"{n}00 ALWAYSMATCH Rd",
            "city": "Tampa", "state": "FL", "zip": "33610"}
    lead.update(overrides)
    return lead


def post_run(client, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/skiptrace-runs", data, content_type="application/json", **extra)


# --- CSV: whole-file problems are refused and create nothing ----------------------------------------


@pytest.mark.parametrize(
    ("data", "match"),
    [
        pytest.param(csv_bytes("G-1,Dana,Reyes,100 Main St,Tampa,FL,33610"), "no street column", id="no-header"),
        pytest.param(b"", "file is empty", id="empty-file"),
        pytest.param(b"\r\n\r\n  \r\n", "file is empty", id="only-blank-lines"),
        pytest.param(csv_bytes("Name,Phone,Email", "Dana,555,d@x"), "no street column", id="no-street-column"),
        pytest.param(b"PK\x03\x04" + bytes(range(256)) * 10, "zip archive", id="a-zip-file"),
        pytest.param(b"\x00" * 5000, "binary", id="only-nul-bytes"),
        pytest.param("\ufeff".encode("utf-16-le") + csv_bytes(HEADER, GOOD, encoding="utf-16-le"), "UTF-16",
                     id="utf16-with-bom"),
        pytest.param(csv_bytes(HEADER, GOOD, encoding="utf-16-le"), "UTF-16", id="utf16-without-bom"),
        pytest.param(csv_bytes(HEADER, GOOD, 'G-3,"Ann,Lee,1 Main St,Tampa,FL,33610', *[GOOD2] * 150),
                     "closing quote", id="unclosed-quote-mid-file"),
    ],
)
def test_a_file_that_is_no_lead_list_is_refused_by_the_cli_and_creates_nothing(tmp_path, data, match):
    message = cli_refused(tmp_path, data, match)
    with pytest.raises(IntakeError):
        create_from_csv(data)
    assert Run.objects.count() == 0 and RunItem.objects.count() == 0 and Lead.objects.count() == 0
    assert "Traceback" not in message


def test_a_header_only_file_is_refused_by_the_cli_like_an_empty_json_list(tmp_path):
    cli_refused(tmp_path, csv_bytes(HEADER), "no")
    assert Run.objects.count() == 0 and RunItem.objects.count() == 0 and ProviderCall.objects.count() == 0


def test_the_cli_in_a_real_process_refuses_a_bad_file_with_a_message_and_no_traceback(tmp_path):
    bad = tmp_path / "no street.csv"
    bad.write_bytes(csv_bytes("Name,Phone", "Dana,555"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update({"SQLITE_DB_PATH": str(tmp_path / "db" / "x.db"), "CONVEXA_IGNORE_DOTENV": "1", "DJANGO_DEBUG": "false"})

    result = subprocess.run([sys.executable, "manage.py", "skiptrace_run", str(bad)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "no street column" in result.stderr and "nothing was created" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_file_is_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("skiptrace_run", str(tmp_path / "nope.csv"))


# --- CSV: row-level problems fail the row; the good rows run -----------------------------------------


@pytest.mark.parametrize(
    ("row", "why"),
    [
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL,ABCDE", "bad zip", id="letters-zip"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL,00000", "bad zip", id="zero-zip"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL,33610-12", "bad zip", id="short-plus4"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,ZZ,", "unknown state", id="unknown-state"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,Atlantis,33610", "unknown state", id="unknown-state-name"),
        pytest.param("B-1,Dana,Reyes,100 Main St,,FL,", "needs zip or city and state", id="no-zip-no-city"),
        pytest.param("B-1,Dana,Reyes,,Tampa,FL,33610", "missing street", id="no-street"),
        pytest.param("B-1,Dana,Reyes,\U0001F3E0\U0001F525,Tampa,FL,33610", "missing street", id="emoji-street"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL,33610,surprise", "more cells than the header",
                     id="extra-cell"),
        pytest.param("B-1,Dana,Reyes," + "9" * (1024 * 1024) + " Main St,Tampa,FL,33610", "field too long: street",
                     id="1MB-street-cell"),
        pytest.param("B-1," + "A" * (1024 * 1024) + ",Reyes,100 Main St,Tampa,FL,33610", "field too long: first_name",
                     id="1MB-name-cell"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL,33610" + "\u200b" * 20, "field too long: zip",
                     id="zip-padded-with-zero-width-spaces"),
        pytest.param("B-1,Dana,Reyes,100 Main St,Tampa,FL" + "\u200b" * 40 + ",33610", "field too long: state",
                     id="state-padded-with-zero-width-spaces"),
    ],
)
@pytest.mark.parametrize("entry", ["run_create", "cli"])
def test_a_bad_row_fails_with_invalid_input_and_the_good_rows_run(row, why, entry, sandbox, tmp_path):
    data = csv_bytes(HEADER, GOOD, row)
    if entry == "cli":
        run_id, err = cli(tmp_path, data)
        assert "2 leads, 1 invalid" in err
    else:
        created = create_from_csv(data)
        run_id = created.run.run_id
        assert (created.total, created.invalid) == (2, 1)

    assert_failed_invalid(items(run_id)["B-1"], why)
    assert_good_rows_run(run_id)


def test_a_1mb_cell_in_a_column_nobody_reads_is_harmless(sandbox):
    created = create_from_csv(csv_bytes(HEADER + ",Notes", GOOD + "," + "x" * (1024 * 1024)))

    assert (created.total, created.invalid) == (1, 0)
    assert_good_rows_run(created.run.run_id)


def test_nul_bytes_inside_cells_are_dropped_and_the_row_runs(tmp_path, sandbox):
    data = csv_bytes(HEADER, "G-1,Da\x00na,Re\x00yes,100 ALWAYS\x00MATCH Rd,Tampa,FL,336\x0010")

    run_id, _ = cli(tmp_path, data)

    lead = Lead.objects.get(lead_id="G-1")
    assert (lead.first_name, lead.street, lead.zip) == ("Dana", "100 ALWAYSMATCH Rd", "33610")
    assert_good_rows_run(run_id)


def test_mixed_utf8_and_windows_1252_lines_are_each_read_right(sandbox):
    utf8 = "G-1,José,Peña,100 ALWAYSMATCH Rd,Tampa,FL,33610\r\n".encode()
    cp1252 = "G-2,Zoë,Müller,200 ALWAYSMATCH Rd,Tampa,FL,33610\r\n".encode("cp1252")
    data = (HEADER + "\r\n").encode() + utf8 + cp1252

    created = create_from_csv(data)

    assert created.invalid == 0
    assert Lead.objects.get(lead_id="G-1").first_name == "José"
    assert (Lead.objects.get(lead_id="G-2").first_name, Lead.objects.get(lead_id="G-2").last_name) == ("Zoë", "Müller")
    assert_good_rows_run(created.run.run_id, ("G-1", "G-2"))


def test_a_bom_and_a_pasted_second_export_with_its_own_bom_and_header(sandbox):
    data = b"\xef\xbb\xbf" + csv_bytes(HEADER, GOOD) + b"\xef\xbb\xbf" + csv_bytes(HEADER, GOOD2)

    created = create_from_csv(data)

    assert (created.total, created.invalid) == (2, 0)
    assert_good_rows_run(created.run.run_id, ("G-1", "G-2"))


def test_duplicate_headers_the_leftmost_column_wins(sandbox):
    data = csv_bytes("LeadID,Street,Street,Zip,ZIP", "G-1,100 ALWAYSMATCH Rd,666 Other St,33610,99999")

    created = create_from_csv(data)

    assert created.invalid == 0
    assert Lead.objects.get(lead_id="G-1").street == "100 ALWAYSMATCH Rd"
    assert Lead.objects.get(lead_id="G-1").zip == "33610"
    assert_good_rows_run(created.run.run_id)


def test_200000_columns_are_read_and_the_lead_columns_found_among_them(sandbox):
    filler = 200_000 - 7
    header = ",".join([f"c{i}" for i in range(filler)] + HEADER.split(","))
    row = "," * filler + GOOD

    created = create_from_csv(csv_bytes(header, row))

    assert (created.total, created.invalid) == (1, 0)
    assert_good_rows_run(created.run.run_id)


def test_200000_cells_in_a_row_under_a_short_header_fail_that_row_only(sandbox):
    created = create_from_csv(csv_bytes(HEADER, GOOD, "B-1,Dana,Reyes,1 Main St,Tampa,FL,33610" + ",x" * 200_000))

    assert_failed_invalid(items(created.run.run_id)["B-1"], "more cells than the header")
    assert_good_rows_run(created.run.run_id)


def test_formula_cells_are_stored_literally_and_neutralized_in_the_dialer_csv(sandbox, settings):
    rows = ['=HYPERLINK("http://evil.example";"x"),+1-1,-2+3,100 ALWAYSMATCH Rd,Tampa,FL,33610',
            '@SUM(A1:A9),=1+1,"=cmd|\' /C calc\'!A0",200 ALWAYSMATCH Rd,Tampa,FL,33610']
    created = create_from_csv(csv_bytes(HEADER, *rows))
    run_id = created.run.run_id
    assert created.invalid == 0
    work()
    lead_ids = set(items(run_id))
    assert lead_ids == {'=HYPERLINK("http://evil.example";"x")', "@SUM(A1:A9)"}
    assert Lead.objects.get(lead_id="@SUM(A1:A9)").first_name == "=1+1"
    assert all(i.status == "done" for i in items(run_id).values())

    _, csv_path = reports.artifact_paths(run_id)
    table = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8-sig"))))
    for row in table[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert {row[0] for row in table[1:]} == {"'=HYPERLINK(\"http://evil.example\";\"x\")", "'@SUM(A1:A9)"}


def test_emoji_and_right_to_left_names_are_kept_as_written(sandbox):
    rows = ["G-1,\U0001F600 Dana,\u05db\u05d4\u05df \u202eReyes\u202c,100 ALWAYSMATCH Rd,Tampa,FL,33610",
            "G-2,\u0645\u062d\u0645\u062f,\u0627\u0644\u0639\u0644\u064a,200 ALWAYSMATCH Rd,Tampa,FL,33610"]

    created = create_from_csv(csv_bytes(HEADER, *rows))

    assert created.invalid == 0
    assert Lead.objects.get(lead_id="G-1").last_name == "\u05db\u05d4\u05df \u202eReyes\u202c"
    assert Lead.objects.get(lead_id="G-2").first_name == "\u0645\u062d\u0645\u062f"
    assert_good_rows_run(created.run.run_id, ("G-1", "G-2"))


def test_sql_in_a_csv_is_stored_literally_and_the_tables_are_intact(sandbox):
    row = f'"{SQL}",Robert\'); DROP TABLE leads;--,x,"100 ALWAYSMATCH Rd {SQL}",Tampa,FL,33610'

    created = create_from_csv(csv_bytes(HEADER, row, GOOD))

    assert created.invalid == 0
    assert Lead.objects.get(lead_id=SQL).street == f"100 ALWAYSMATCH Rd {SQL}"
    assert_good_rows_run(created.run.run_id, (SQL, "G-1"))
    assert_tables_intact()
    assert ProviderCall.objects.filter(lead_id=SQL).count() == 1


# --- JSON bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("null", id="null"),
        pytest.param("[]", id="array"),
        pytest.param('"leads"', id="string"),
        pytest.param(b"\xff\xfe\x00garbage", id="invalid-utf8"),
        pytest.param("source_label=x&leads=1", id="form-encoded"),
        pytest.param('{"leads": [' + "9" * 5000 + "]}", id="integer-of-5000-digits"),
        pytest.param('{"leads": ' + "[" * 50_000 + "]" * 50_000 + "}", id="nested-50000-deep"),
        pytest.param('{"leads": [{"lead_id": NaN, "street": "1 Main St", "zip": "33610"}]}', id="NaN-lead-id"),
        pytest.param('{"leads": [{"lead_id": "a\\ud800", "street": "1 Main St", "zip": "33610"}]}', id="lone-surrogate"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(api_client, body):
    error = assert_error(post_run(api_client, body), 400, "ValidationError")

    assert error["fields"]
    assert Run.objects.count() == 0


@pytest.mark.parametrize(
    ("leads", "field"),
    [
        pytest.param([good_lead(), {"lead_id": "B", "street": {"line1": ["1 Main St"]}, "zip": "33610"}],
                     "leads[1].street", id="object-street"),
        pytest.param([good_lead(), {"lead_id": "B", "street": "1 Main St", "zip": [[33610]]}], "leads[1].zip",
                     id="nested-list-zip"),
        pytest.param([good_lead(), [good_lead(2)]], "leads[1]", id="lead-is-a-list"),
        pytest.param([good_lead(), {"lead_id": {"id": 1}, "street": "1 Main St"}], "leads[1].lead_id",
                     id="object-lead-id"),
        pytest.param([good_lead(state=True)], "leads[0].state", id="boolean-state"),
        pytest.param([good_lead(first_name=1.5e300)], "leads[0].first_name", id="float-name"),
        pytest.param([good_lead(lead_id="\x00")], "leads[0].lead_id", id="nul-lead-id"),
        pytest.param([good_lead(lead_id="x" * 65)], "leads[0].lead_id", id="65-char-lead-id"),
    ],
)
def test_nested_wrong_types_are_400_naming_index_and_field_and_nothing_is_created(api_client, leads, field):
    error = assert_error(post_run(api_client, {"leads": leads}), 400, "ValidationError")

    assert field in error["fields"]
    assert Run.objects.count() == 0 and RunItem.objects.count() == 0


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        pytest.param({"policy": {"force": "true"}}, "policy.force", id="string-policy-flag"),
        pytest.param({"policy": [True]}, "policy", id="list-policy"),
        pytest.param({"source_label": ["a"]}, "source_label", id="list-label"),
        pytest.param({"source_label": "x" * 10_000}, "source_label", id="huge-label"),
    ],
)
def test_wrong_policy_or_label_is_400(api_client, extra, field):
    error = assert_error(post_run(api_client, {"leads": [good_lead()], **extra}), 400, "ValidationError")

    assert field in error["fields"]


def test_10001_query_parameters_are_a_json_400_not_a_500(api_client):
    query = "&".join(f"p{i}=1" for i in range(10_001))

    assert_error(api_client.get(f"/api/metrics?{query}"), 400, "BadRequest")
    assert_error(api_client.get(f"/api/debug/skiptrace-latest?{query}"), 400, "BadRequest")


def test_a_multipart_upload_to_a_json_route_is_400(api_client):
    response = api_client.post("/api/skiptrace-runs", {"file": io.BytesIO(csv_bytes(HEADER, GOOD))},
                               content_type=MULTIPART_CONTENT)

    assert_error(response, 400, "ValidationError")
    assert Run.objects.count() == 0


def test_a_bad_content_length_header_is_400_not_500(api_client):
    response = post_run(api_client, {"leads": [good_lead()]}, CONTENT_LENGTH="ten")

    assert_error(response, 400, "ValidationError")


def test_a_10mb_body_is_read_its_huge_lead_fails_and_the_good_lead_runs(api_client, sandbox):
    huge = good_lead(2, street="1" + " Main St" * (10 * 1024 * 1024 // 8))
    body = json.dumps({"leads": [good_lead(), huge]})
    assert len(body) > 10 * 1024 * 1024

    response = post_run(api_client, body)

    assert response.status_code == 200, response.content[:300]
    run_id = response.json()["run_id"]
    assert_failed_invalid(items(run_id)["G-2"], "field too long: street")
    assert_good_rows_run(run_id)


def test_100001_leads_is_413_and_nothing_is_created(api_client):
    body = '{"leads": [' + ",".join([json.dumps(good_lead())] * 100_001) + "]}"

    assert_error(post_run(api_client, body), 413, "PayloadTooLarge")
    assert Run.objects.count() == 0


def test_a_body_over_50mb_is_413_json(api_client):
    body = '{"leads": [' + json.dumps(good_lead(street="x" * (51 * 1024 * 1024))) + "]}"

    assert_error(post_run(api_client, body), 413, "PayloadTooLarge")
    assert Run.objects.count() == 0


def test_incomplete_and_bad_leads_in_json_fail_row_by_row_and_the_good_one_runs(api_client, sandbox):
    leads = [good_lead(), good_lead(2, zip="ABCDE", city="", state=""), good_lead(3, state="ZZ"),
             good_lead(4, street="   "), good_lead(5, zip="33610" + "\u200b" * 20)]

    response = post_run(api_client, {"leads": leads})

    assert response.status_code == 200
    run_id = response.json()["run_id"]
    assert response.json()["invalid"] == 4
    by_id = items(run_id)
    assert_failed_invalid(by_id["G-2"], "bad zip")
    assert_failed_invalid(by_id["G-3"], "unknown state")
    assert_failed_invalid(by_id["G-4"], "missing street")
    assert_failed_invalid(by_id["G-5"], "field too long: zip")
    assert_good_rows_run(run_id)


def test_sql_looking_lead_id_and_street_in_json_are_stored_literally_and_the_tables_are_intact(api_client, sandbox):
    leads = [good_lead(lead_id=SQL, street=f"100 ALWAYSMATCH Rd {SQL}", first_name="Robert'); DROP TABLE leads;--"),
             good_lead()]

    response = post_run(api_client, {"source_label": SQL, "leads": leads})

    assert response.status_code == 200
    run_id = response.json()["run_id"]
    assert Run.objects.get(run_id=run_id).source_label == SQL
    assert Lead.objects.get(lead_id=SQL).street == f"100 ALWAYSMATCH Rd {SQL}"
    assert_good_rows_run(run_id, (SQL, "G-1"))
    assert_tables_intact()
    assert api_client.get(f"/api/leads/{SQL}/contacts").status_code == 200
    single = api_client.post("/api/skiptrace", json.dumps({"lead": good_lead(9, lead_id=SQL + "2")}),
                             content_type="application/json")
    assert single.status_code == 200 and single.json()["lead_id"] == SQL + "2"
    assert_tables_intact()


@pytest.mark.parametrize(
    "run_id",
    [
        pytest.param("run_doesnotexist", id="unknown"),
        pytest.param("x" * 1000, id="1000-chars"),
        pytest.param("%00", id="nul"),
        pytest.param("%F0%9F%92%A3", id="emoji"),
        pytest.param("..%2F..%2Fetc%2Fpasswd", id="traversal"),
        pytest.param("'%20OR%201=1%20--", id="sql"),
        pytest.param("%ff%fe", id="invalid-utf8"),
    ],
)
@pytest.mark.parametrize(("method", "suffix"), [("get", "status"), ("get", "report"), ("get", "artifacts"),
                                                ("post", "resume")])
def test_an_unknown_or_hostile_run_id_is_404_json(api_client, run_id, method, suffix):
    response = getattr(api_client, method)(f"/api/skiptrace-runs/{run_id}/{suffix}")

    assert_error(response, 404, "NotFound")


@pytest.mark.parametrize("lead_id", ["A/1", "A/1/contacts", "../../admin", "100%", "#1 Main?x=1"])
def test_a_lead_id_with_url_characters_still_reaches_its_contacts(api_client, sandbox, lead_id):
    created = api_client.post("/api/skiptrace", json.dumps({"lead": good_lead(lead_id=lead_id)}),
                              content_type="application/json")
    assert created.status_code == 200, created.content

    response = api_client.get(f"/api/leads/{quote(lead_id, safe='')}/contacts")

    assert response.status_code == 200, response.content
    assert response.json()["leadId"] == lead_id


@pytest.mark.parametrize("lead_id", ["nobody", "%00", "x" * 500, "%27%3B%20DROP%20TABLE%20leads%3B%20--", "a%2F"])
def test_an_unknown_or_hostile_lead_id_is_404_json(api_client, lead_id):
    assert_error(api_client.get(f"/api/leads/{lead_id}/contacts"), 404, "NotFound")
    assert_tables_intact()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"lead": "4410 Oak Hollow Dr"}', id="lead-is-a-string"),
        pytest.param('{"lead": {"lead_id": "A", "street": ["1 Main St"], "zip": "33610"}}', id="list-street"),
        pytest.param('{"lead": {"lead_id": "A", "street": "1 Main St", "zip": "ABCDE"}}', id="bad-zip"),
        pytest.param('{"lead": {"lead_id": "A", "street": "1 Main St", "state": "ZZ", "city": "X"}}', id="bad-state"),
        pytest.param('{"lead": {"lead_id": "A", "street": "1 Main St", "zip": "33610"}, "policy": 1}', id="policy-int"),
        pytest.param("{not json", id="not-json"),
    ],
)
def test_single_lead_hostile_bodies_are_400_and_nothing_reaches_the_provider(api_client, sandbox, body):
    response = api_client.post("/api/skiptrace", body, content_type="application/json")

    assert_error(response, 400, "ValidationError")
    assert sandbox.stats.snapshot()["requests"] == 0


def work() -> None:
    fakes.drain()
