"""skiptrace.intake: CSV files and JSON bodies -> LeadInput. Pure: no Django, no database."""

from __future__ import annotations

import hashlib
import io
import itertools
import random
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from skiptrace.intake import (
    CHUNK_BYTES,
    HEADER_ALIASES,
    MAX_FIELD_CHARS,
    IntakeError,
    LeadInput,
    LeadValidationError,
    canonical_header,
    derive_lead_id,
    iter_csv_leads,
    map_headers,
    parse_json_leads,
)

# The sample lead list (fixtures/leads_sample.csv), so the suite runs wherever the repo is cloned.
SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "leads_sample.csv"
CONTRACT_ALIASES = {
    "lead_id": ("LeadID", "lead_id", "Lead ID", "id"),
    "first_name": ("First Name", "first_name", "Owner First Name"),
    "last_name": ("Last Name", "Owner Last Name"),
    "street": ("Street", "Address", "Property Address", "Site Address"),
    "city": ("City", "Property City"),
    "state": ("State", "Property State"),
    "zip": ("Zip", "Zip Code", "Postal Code", "Property Zip"),
}
HEADER = "Lead ID,First Name,Last Name,Street,City,State,Zip"


@pytest.fixture(autouse=True)
def _product_settings() -> None:
    """Replaces conftest's Django settings fixture: these tests are pure and run without Django."""
    return None


def read(data: str | bytes, **kwargs: int) -> list[LeadInput]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return list(iter_csv_leads(io.BytesIO(raw), **kwargs))


def fields(lead: LeadInput) -> tuple[str | None, ...]:
    return (lead.lead_id, lead.first_name, lead.last_name, lead.street, lead.city, lead.state, lead.zip)


class ShortReads(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, like a socket or an upload."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step, self.pos = data, step, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the whole file was requested at once")
        chunk = self.data[self.pos : self.pos + min(size, self.step)]
        self.pos += len(chunk)
        return chunk


class GeneratedCsv(io.RawIOBase):
    """A CSV produced on demand from a generator; fails the test if read past ``tripwire`` bytes."""

    def __init__(self, rows: Iterator[bytes], tripwire: int | None = None) -> None:
        self.rows, self.tripwire = rows, tripwire
        self.buffer = b""
        self.served = 0
        self.largest_request = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the whole file was requested at once")
        self.largest_request = max(self.largest_request, size)
        if self.tripwire is not None and self.served >= self.tripwire:
            raise AssertionError(f"read past byte {self.tripwire}")
        while len(self.buffer) < size:
            row = next(self.rows, None)
            if row is None:
                break
            self.buffer += row
        chunk, self.buffer = self.buffer[:size], self.buffer[size:]
        self.served += len(chunk)
        return chunk


def generated_rows(count: int | None) -> Iterator[bytes]:
    yield (HEADER + "\r\n").encode()
    numbers = itertools.count(1) if count is None else range(1, count + 1)
    for i in numbers:
        yield f"A-{i},Ann,Lee,{i} Main St,Tampa,FL,33610\r\n".encode()


# --------------------------------------------------------------------------------------------
# The sample file


def test_sample_file_parses_to_20_rows_with_the_right_fields() -> None:
    leads = list(iter_csv_leads(SAMPLE.open("rb")))

    assert len(leads) == 20
    assert [lead.lead_id for lead in leads] == [f"A-{1001 + i}" for i in range(20)]
    assert [lead.row_number for lead in leads] == list(range(1, 21))
    assert fields(leads[0]) == ("A-1001", "Denise", "Alvarez", "4410 Oak Hollow Dr", "Tampa", "FL", "33610")
    assert leads[3].street == "77 Bayview Terrace, #3"  # quoted comma
    assert leads[5].first_name == "" and leads[5].last_name == "SUNRISE HOLDINGS LLC"
    assert leads[6].last_name == "Núñez"
    assert leads[8].street == "908   Peachtree   Street  NE"  # stripped, not normalized
    assert leads[12].first_name == '=HYPERLINK("http://x")'  # kept verbatim; the CSV writer defuses it
    assert all(lead.problem is None for lead in leads)


def test_sample_rows_that_cannot_run_are_still_returned_for_the_caller_to_fail() -> None:
    leads = {lead.lead_id: lead for lead in iter_csv_leads(SAMPLE.open("rb"))}

    assert leads["A-1012"].street == "" and leads["A-1012"].problem is None
    assert (leads["A-1020"].city, leads["A-1020"].state, leads["A-1020"].zip) == ("Springfield", "", "")


# --------------------------------------------------------------------------------------------
# Headers


@pytest.mark.parametrize(
    ("alias", "field"),
    [(alias, field) for field, aliases in CONTRACT_ALIASES.items() for alias in aliases],
)
def test_every_contract_alias_maps_to_its_field(alias: str, field: str) -> None:
    assert alias in HEADER_ALIASES[field]
    headers = ["Street", alias] if field != "street" else [alias]
    assert map_headers(headers)[field] == headers.index(alias)


def test_contract_aliases_come_first_in_contract_order() -> None:
    for field, aliases in CONTRACT_ALIASES.items():
        assert HEADER_ALIASES[field][: len(aliases)] == aliases
    assert set(HEADER_ALIASES) == set(CONTRACT_ALIASES)


@pytest.mark.parametrize(
    "name",
    ["PROPERTY ADDRESS", "property_address", " Property-Address ", "property.address", "PropertyAddress"],
)
def test_headers_match_case_space_and_punctuation_insensitively(name: str) -> None:
    assert map_headers(["x", name]) == {"street": 1}


def test_canonical_header_keeps_only_lowercase_letters_and_digits() -> None:
    assert canonical_header("Property Zip ") == "propertyzip"
    assert canonical_header("\ufeffLead-ID #") == "leadid"
    assert canonical_header("Owner 1 First Name") == "owner1firstname"


def test_a_propstream_export_maps_property_columns_and_never_mailing_ones() -> None:
    headers = [
        "Mailing Address",
        "Mailing City",
        "Mailing State",
        "Mailing Zip",
        "Address",
        "City",
        "State",
        "Zip",
        "Owner 1 First Name",
        "Owner 1 Last Name",
    ]
    assert map_headers(headers) == {
        "street": 4,
        "city": 5,
        "state": 6,
        "zip": 7,
        "first_name": 8,
        "last_name": 9,
    }


def test_duplicate_headers_map_to_the_first_matching_column() -> None:
    assert map_headers(["Street", "Zip", "ZIP", "Property Address"]) == {"street": 0, "zip": 1}
    leads = read("Street,Zip,Zip\n1 Main St,33610,99999\n")
    assert leads[0].zip == "33610"


def test_no_street_column_is_refused_naming_the_expected_and_found_headers() -> None:
    with pytest.raises(IntakeError) as caught:
        iter_csv_leads(io.BytesIO(b"Name,Mailing Address,Zip\nAnn,1 Main St,33610\n"))
    assert str(caught.value) == (
        "no street column: expected one of Street, Address, Property Address, Site Address;"
        " found: Name, Mailing Address, Zip"
    )


@pytest.mark.parametrize(
    ("street", "unit", "expected"),
    [
        ("12 Main St", "4", "12 Main St #4"),
        ("12 Main St", "Apt 4B", "12 Main St Apt 4B"),
        ("12 Main St", "#4", "12 Main St #4"),
        ("12 Main St Apt 4", "4", "12 Main St Apt 4"),
        ("12 Main St", "", "12 Main St"),
        ("", "4", ""),
    ],
)
def test_a_separate_unit_column_is_appended_to_the_street(street: str, unit: str, expected: str) -> None:
    [lead] = read(f"Address,Unit #,Zip\n{street},{unit},33610\n")
    assert lead.street == expected


# --------------------------------------------------------------------------------------------
# Encodings, line endings, quoting


def test_bom_and_no_bom_give_the_same_leads() -> None:
    body = f"{HEADER}\r\nA-1,Ana,Núñez,1 Main St,Tampa,FL,33610\r\n".encode()
    assert read(b"\xef\xbb\xbf" + body) == read(body)
    assert read(body)[0].lead_id == "A-1"


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r"])
def test_crlf_lf_and_cr_line_endings_give_the_same_leads(newline: str) -> None:
    text = newline.join(
        [HEADER, "A-1,Ann,Lee,1 Main St,Tampa,FL,33610", "A-2,Bo,Ray,2 Oak Ave,Tampa,FL,33611", ""]
    )
    leads = read(text)
    assert [lead.lead_id for lead in leads] == ["A-1", "A-2"]
    assert leads[1].zip == "33611" and leads[1].row_number == 2


def test_windows_1252_names_are_decoded() -> None:
    data = f"{HEADER}\r\nA-1,José,Núñez,1 Main St,Tampa,FL,33610\r\n".encode("cp1252")
    assert b"N\xfa\xf1ez" in data
    [lead] = read(data)
    assert (lead.first_name, lead.last_name) == ("José", "Núñez")


def test_mixed_utf8_and_windows_1252_lines_each_decode() -> None:
    data = (
        f"{HEADER}\r\n".encode()
        + "A-1,Ana,Núñez,1 Main St,Tampa,FL,33610\r\n".encode()
        + "A-2,Ana,Núñez,2 Main St,Tampa,FL,33610\r\n".encode("cp1252")
        + "A-3,Zoë,Brontë,3 Main St,Tampa,FL,33610\r\n".encode()
    )
    assert [lead.last_name for lead in read(data)] == ["Núñez", "Núñez", "Brontë"]


def test_windows_1252_bytes_deep_in_a_utf8_file_decode_without_rereading() -> None:
    filler = "".join(f"A-{i},Ann,Lee,{i} Main St,Tampa,FL,33610\r\n" for i in range(5000)).encode()
    data = f"{HEADER}\r\n".encode() + filler + "Z-1,Renée,Müller,9 Elm St,Tampa,FL,33610\r\n".encode("cp1252")
    assert len(data) > 2 * CHUNK_BYTES
    assert read(data)[-1].first_name == "Renée"


def test_an_undefined_windows_1252_byte_becomes_a_replacement_character() -> None:
    [lead] = read(b"Street,Last Name\n1 Main St,Ab\x81c\n")
    assert lead.last_name == "Ab\ufffdc"


def _row_at_chunk_boundary(marker_offset: int, marker: bytes) -> bytes:
    """A file whose ``marker`` starts ``marker_offset`` bytes before the first chunk boundary."""
    head = b"Lead ID,Last Name,Street,Zip,Notes\r\n"
    row_start = b"B-2,"
    pad = CHUNK_BYTES - marker_offset - len(head) - len(b"A-1,Lee,1 Main St,33610,\r\n") - len(row_start)
    filler = b"A-1,Lee,1 Main St,33610," + b"n" * pad + b"\r\n"
    data = head + filler + row_start + marker + b",2 Oak Ave,33611,\r\nC-3,Kim,3 Elm St,33612,\r\n"
    assert data.index(marker) == CHUNK_BYTES - marker_offset
    return data


@pytest.mark.parametrize("offset", [1, 2, 3])
def test_a_utf8_character_split_across_read_chunks_decodes(offset: int) -> None:
    data = _row_at_chunk_boundary(offset, "ññññ".encode())
    leads = read(data)
    assert [lead.last_name for lead in leads] == ["Lee", "ññññ", "Kim"]


def test_a_crlf_split_across_read_chunks_is_one_line_ending() -> None:
    # The CR is the last byte of the first chunk, its LF the first of the second: a split that
    # read as two line endings would add a blank row and shift the row numbers after it.
    head = b"Lead ID,Street\r\n"
    filler = b"A-1," + b"x" * (CHUNK_BYTES - len(head) - len(b"A-1,") - 1) + b"\r"
    data = head + filler + b"\nB-2,2 Oak Ave\r\nC-3,3 Elm St\r\n"
    assert data[CHUNK_BYTES - 1 : CHUNK_BYTES + 1] == b"\r\n"
    leads = read(data)
    assert [(lead.lead_id, lead.row_number) for lead in leads] == [("A-1", 1), ("B-2", 2), ("C-3", 3)]


def test_short_reads_give_the_same_leads_as_one_read() -> None:
    """Reads of an odd size put chunk boundaries everywhere: inside characters, CRLFs, quotes."""
    rows = [
        "A-{i},Zoë,Núñez,{i} Main St,Tampa,FL,33610\r\n".encode(),
        "B-{i},José,Muñoz,{i} Oak Ave,Tampa,FL,33611\r\n".encode("cp1252"),
        b'C-{i},Ann,Lee,"{i} Elm St,\r\nApt 4",Tampa,FL,33612\r\n',
        b"D-{i},Bo,Ray,{i} Pine Rd,Tampa,FL,33613\r",
        b"E-{i},Cy,Fox,{i} Bay Dr,Tampa,FL,33614\n",
    ]
    body = b"".join(rows[i % len(rows)].replace(b"{i}", str(i).encode()) for i in range(5000))
    data = SAMPLE.read_bytes() + body
    assert len(data) > 3 * CHUNK_BYTES
    expected = read(data)
    assert len(expected) == 5020
    assert list(iter_csv_leads(ShortReads(data, step=997))) == expected
    assert {lead.last_name for lead in expected[20:]} == {"Núñez", "Muñoz", "Lee", "Ray", "Fox"}
    assert {lead.street for lead in expected[20:25]} >= {"2 Elm St, Apt 4"}
    assert [lead.row_number for lead in expected] == list(range(1, 5021))


def test_quoted_cells_keep_commas_and_newlines_and_later_rows_keep_their_numbers() -> None:
    text = (
        f"{HEADER}\r\n"
        'A-1,Ann,Lee,"12 Main St,\r\nApt 4",Tampa,FL,33610\r\n'
        'A-2,"Bo ""Jr""",Ray,2 Oak Ave,Tampa,FL,33611\r\n'
    )
    leads = read(text)
    assert leads[0].street == "12 Main St, Apt 4"  # a line break inside an address is a space
    assert leads[1].first_name == 'Bo "Jr"'
    assert [lead.row_number for lead in leads] == [1, 2]


def test_nul_bytes_are_stripped() -> None:
    data = f"{HEADER}\r\nA-1,An\x00n,Lee,1 Main\x00 St,Tampa,FL,33610\x00\r\n".encode()
    [lead] = read(data)
    assert (lead.first_name, lead.street, lead.zip) == ("Ann", "1 Main St", "33610")


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_semicolon_and_tab_delimited_files_are_recognized(delimiter: str) -> None:
    text = (
        delimiter.join(["Street", "City", "Zip"])
        + "\n"
        + delimiter.join(["12 Main St, Apt 4", "Tampa", "33610"])
    )
    [lead] = read(text)
    assert (lead.street, lead.city, lead.zip) == ("12 Main St, Apt 4", "Tampa", "33610")
    assert lead.problem is None


# --------------------------------------------------------------------------------------------
# File shape


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"\r\n\r\n  \n", b"\xef\xbb\xbf\r\n"])
def test_an_empty_file_is_refused(data: bytes) -> None:
    with pytest.raises(IntakeError, match="^file is empty$"):
        iter_csv_leads(io.BytesIO(data))


def test_a_file_of_empty_cells_has_no_header_row() -> None:
    with pytest.raises(IntakeError, match="^file has no header row$"):
        iter_csv_leads(io.BytesIO(b",,,\r\n , ,\r\n"))


def test_a_header_without_rows_yields_zero_leads() -> None:
    assert read(HEADER + "\r\n") == []
    assert read(HEADER) == []


def test_blank_rows_are_skipped_but_counted_in_row_numbers() -> None:
    text = f"\r\n{HEADER}\r\nA-1,Ann,Lee,1 Main St,Tampa,FL,33610\r\n\r\n,,, ,,,\r\nA-2,Bo,Ray,2 Oak Ave,Tampa,FL,33611\r\n"
    leads = read(text)
    assert [(lead.lead_id, lead.row_number) for lead in leads] == [("A-1", 1), ("A-2", 4)]


def test_a_repeated_header_row_from_pasted_exports_is_skipped() -> None:
    text = f"{HEADER}\r\nA-1,Ann,Lee,1 Main St,Tampa,FL,33610\r\n\ufeff{HEADER}\r\nA-2,Bo,Ray,2 Oak Ave,Tampa,FL,33611\r\n"
    assert [lead.lead_id for lead in read(text)] == ["A-1", "A-2"]


def test_a_row_with_more_cells_than_the_header_is_a_problem_row() -> None:
    leads = read(
        f"{HEADER}\r\nA-1,Ann,Lee,1 Main St,Tampa,FL,33610,surprise\r\nA-2,Bo,Ray,2 Oak Ave,Tampa,FL,33611\r\n"
    )
    assert leads[0].problem == "row has more cells than the header"
    assert leads[0].street == "1 Main St"
    assert leads[1].problem is None


def test_trailing_empty_cells_beyond_the_header_are_not_a_problem() -> None:
    [lead] = read(f"{HEADER}\r\nA-1,Ann,Lee,1 Main St,Tampa,FL,33610,,\r\n")
    assert lead.problem is None


def test_a_row_with_fewer_cells_than_the_header_gets_empty_strings() -> None:
    [lead] = read(f"{HEADER}\r\nA-1,Ann,Lee,1 Main St\r\n")
    assert fields(lead) == ("A-1", "Ann", "Lee", "1 Main St", "", "", "")
    assert lead.problem is None


def test_a_one_megabyte_cell_makes_its_row_a_problem_not_a_crash() -> None:
    huge = "x" * 1_000_000
    leads = read(
        f'{HEADER}\r\nA-1,Ann,Lee,{huge},Tampa,FL,33610\r\nA-2,Bo,Ray,"{huge}",Tampa,FL,33611\r\nA-3,Cy,Fox,3 Elm St,Tampa,FL,33612\r\n'
    )
    assert [lead.problem for lead in leads] == ["field too long: street", "field too long: street", None]
    assert len(leads[0].street) == MAX_FIELD_CHARS


def test_a_cell_just_over_the_field_limit_is_a_problem_and_at_the_limit_is_fine() -> None:
    ok, too_long = "y" * MAX_FIELD_CHARS, "y" * (MAX_FIELD_CHARS + 1)
    leads = read(f"Street,City\n1 Main St,{ok}\n1 Main St,{too_long}\n")
    assert [lead.problem for lead in leads] == [None, "field too long: city"]


def test_a_long_cell_in_an_unused_column_is_ignored() -> None:
    [lead] = read(f"Street,Notes\n1 Main St,{'n' * 500_000}\n")
    assert lead.problem is None and lead.street == "1 Main St"


def test_a_lead_id_over_64_characters_is_a_problem_with_a_short_distinct_id() -> None:
    long_a, long_b = "A" * 80, "A" * 79 + "B"
    leads = read(f"Lead ID,Street\n{long_a},1 Main St\n{long_b},2 Main St\n  {'C' * 64}  ,3 Main St\n")
    assert [lead.problem for lead in leads] == ["lead_id too long", "lead_id too long", None]
    assert all(len(lead.lead_id or "") <= 64 for lead in leads)
    assert leads[0].lead_id != leads[1].lead_id
    assert leads[0].lead_id.startswith("A" * 50)
    assert leads[2].lead_id == "C" * 64


def test_a_missing_lead_id_column_or_value_gives_none_for_the_caller_to_derive() -> None:
    assert read("Street\n1 Main St\n")[0].lead_id is None
    assert read("Lead ID,Street\n  ,1 Main St\n")[0].lead_id is None


@pytest.mark.parametrize(
    "data",
    [
        b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8,
        b"PK\x03\x04" + b"\x14\x00\x06\x00" + bytes(range(256)) * 4,
        random.Random(7).randbytes(8192),
        b"Street\n" + b"\x00" * 200 + b"1 Main St\n",
    ],
    ids=["png", "xlsx", "random", "mostly-nul"],
)
def test_binary_content_is_refused(data: bytes) -> None:
    with pytest.raises(IntakeError, match=r"^not a CSV file \(binary content\)"):
        iter_csv_leads(io.BytesIO(data))


def test_utf16_text_is_refused_with_a_hint() -> None:
    for data in (f"{HEADER}\r\n".encode("utf-16"), f"{HEADER}\r\n".encode("utf-16-le")):
        with pytest.raises(IntakeError, match="UTF-16"):
            iter_csv_leads(io.BytesIO(data))


def test_a_line_of_more_than_16_mib_is_refused_without_holding_the_file() -> None:
    data = b"Street,Notes\n1 Main St," + b"n" * (17 * 1024 * 1024) + b"\n"
    with pytest.raises(IntakeError, match="16 MiB"):
        read(data)


def test_more_rows_than_max_rows_is_refused_when_reached() -> None:
    text = HEADER + "\r\n" + "".join(f"A-{i},Ann,Lee,{i} Main St,Tampa,FL,33610\r\n" for i in range(1, 6))
    assert len(read(text, max_rows=5)) == 5
    leads = iter_csv_leads(io.BytesIO(text.encode()), max_rows=4)
    assert len(list(itertools.islice(leads, 4))) == 4
    with pytest.raises(IntakeError, match="^more than 4 rows$"):
        next(leads)


def test_whole_file_problems_are_raised_at_the_call_not_on_first_iteration() -> None:
    with pytest.raises(IntakeError):
        iter_csv_leads(io.BytesIO(b"Name\nAnn\n"))


def test_an_unclosed_quote_is_refused_instead_of_swallowing_the_rows_after_it() -> None:
    rows = "".join(f"A-{i},Ann,Lee,{i} Main St,Tampa,FL,33610\r\n" for i in range(300))
    text = f'{HEADER}\r\nA-0,Ann,Lee,"1 Main St,Tampa,FL,33610\r\n{rows}'
    with pytest.raises(IntakeError, match="closing quote"):
        read(text)


def test_the_module_imports_without_django_or_normalize() -> None:
    code = (
        "import sys; import skiptrace.intake; "
        "assert 'django' not in sys.modules, 'django imported'; "
        "assert 'skiptrace.normalize' not in sys.modules, 'normalize imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------------------------
# Streaming and speed


def test_it_yields_the_first_rows_without_reading_far_into_the_stream() -> None:
    stream = GeneratedCsv(generated_rows(None), tripwire=2 * CHUNK_BYTES)  # an endless file
    first = list(itertools.islice(iter_csv_leads(stream), 10))
    assert [lead.lead_id for lead in first] == [f"A-{i}" for i in range(1, 11)]
    assert stream.served <= CHUNK_BYTES


def test_a_100k_row_file_is_read_in_bounded_chunks_quickly() -> None:
    stream = GeneratedCsv(generated_rows(100_000))
    started = time.perf_counter()
    ids = [lead.lead_id for lead in iter_csv_leads(stream)]
    elapsed = time.perf_counter() - started
    assert len(ids) == 100_000 and ids[-1] == "A-100000"
    assert stream.largest_request <= CHUNK_BYTES
    assert elapsed < 10, f"{elapsed:.1f}s for 100,000 rows"


# --------------------------------------------------------------------------------------------
# JSON


def lead_json(**overrides: object) -> dict[str, object]:
    lead: dict[str, object] = {
        "lead_id": "L1",
        "first_name": "Ann",
        "last_name": "Lee",
        "street": "1 Main St",
        "city": "Tampa",
        "state": "FL",
        "zip": "33610",
    }
    lead.update(overrides)
    return lead


def test_json_leads_are_returned_stripped_in_order() -> None:
    leads = parse_json_leads([lead_json(lead_id=" L1 ", street=" 1 Main St "), lead_json(lead_id="L2")])
    assert [fields(lead) for lead in leads] == [
        ("L1", "Ann", "Lee", "1 Main St", "Tampa", "FL", "33610"),
        ("L2", "Ann", "Lee", "1 Main St", "Tampa", "FL", "33610"),
    ]
    assert leads[0].row_number is None and leads[0].problem is None


@pytest.mark.parametrize("field", ["lead_id", "first_name", "last_name", "street", "city", "state", "zip"])
@pytest.mark.parametrize(
    "value", [33610, 3.5, {"a": 1}, ["x"], True], ids=["int", "float", "object", "list", "bool"]
)
def test_json_wrong_type_is_refused_naming_index_and_field(field: str, value: object) -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json(), lead_json(**{"lead_id": "L2", field: value})])
    assert caught.value.fields == {f"leads[1].{field}": "must be a string"}


@pytest.mark.parametrize("body", [{"lead_id": "L1"}, "leads", None, 5])
def test_json_leads_that_are_not_a_list_are_refused(body: object) -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads(body)
    assert caught.value.fields == {"leads": "must be a list"}


def test_json_empty_leads_are_refused() -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([])
    assert caught.value.fields == {"leads": "must not be empty"}


def test_json_too_many_leads_are_refused() -> None:
    assert len(parse_json_leads([lead_json()] * 3, max_leads=3)) == 3
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json()] * 4, max_leads=3)
    assert caught.value.fields == {"leads": "at most 3 leads"}
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json()] * 100_001)
    assert caught.value.fields == {"leads": "at most 100000 leads"}


@pytest.mark.parametrize(
    ("lead_id", "message"),
    [
        (["L1"], "must be a string"),
        (None, "is required"),
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("x" * 65, "must be at most 64 characters"),
    ],
)
def test_json_lead_id_must_be_a_string_of_1_to_64_characters(lead_id: object, message: str) -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json(lead_id=lead_id)])
    assert caught.value.fields == {"leads[0].lead_id": message}


def test_json_lead_id_missing_is_refused_and_64_characters_is_fine() -> None:
    lead = lead_json()
    del lead["lead_id"]
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead])
    assert caught.value.fields == {"leads[0].lead_id": "is required"}
    assert parse_json_leads([lead_json(lead_id="x" * 64)])[0].lead_id == "x" * 64


def test_json_lead_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json(), "L2", None])
    assert caught.value.fields == {"leads[1]": "must be an object", "leads[2]": "must be an object"}


def test_json_null_and_absent_fields_become_empty() -> None:
    [lead] = parse_json_leads([{"lead_id": "L1", "street": "1 Main St", "city": None}])
    assert fields(lead) == ("L1", "", "", "1 Main St", "", "", "")


def test_json_unknown_keys_are_refused_by_name() -> None:
    with pytest.raises(LeadValidationError) as err:
        parse_json_leads([{"lead_id": "L1", "street": "1 Main St", "forst_name": "Ann", "extra": {}}])
    assert err.value.fields == {"leads[0].forst_name": "unknown key", "leads[0].extra": "unknown key"}


def test_json_incomplete_but_well_typed_lead_is_accepted_for_the_caller_to_fail() -> None:
    [lead] = parse_json_leads([{"lead_id": "L1", "first_name": "Ann"}])
    assert lead.street == "" and lead.problem is None


def test_json_overlong_field_is_a_problem_not_a_validation_error() -> None:
    [lead] = parse_json_leads([lead_json(street="x" * 5000)])
    assert lead.problem == "field too long: street" and len(lead.street) == MAX_FIELD_CHARS


def test_json_errors_are_capped_at_50() -> None:
    with pytest.raises(LeadValidationError) as caught:
        parse_json_leads([lead_json(zip=i, city=i) for i in range(1000)])
    assert len(caught.value.fields) == 50
    assert "leads[0].city" in caught.value.fields and "leads[24].zip" in caught.value.fields
    assert "leads[0].city: must be a string" in str(caught.value)


# --------------------------------------------------------------------------------------------
# Derived lead ids


@pytest.fixture
def fake_normalize(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A stand-in normalize module: signature from case- and space-folded fields; no street -> invalid."""

    class InvalidLead(ValueError):
        def __init__(self, reason: str) -> None:
            super().__init__(reason)
            self.reason = reason

    def normalize_lead(**kwargs: str) -> types.SimpleNamespace:
        if not kwargs["street"]:
            raise InvalidLead("missing street")
        folded = "|".join(" ".join(kwargs[k].lower().split()) for k in sorted(kwargs))
        return types.SimpleNamespace(signature=hashlib.sha256(folded.encode()).hexdigest())

    module = types.ModuleType("skiptrace.normalize")
    module.InvalidLead = InvalidLead  # type: ignore[attr-defined]
    module.normalize_lead = normalize_lead  # type: ignore[attr-defined]
    import skiptrace

    monkeypatch.setitem(sys.modules, "skiptrace.normalize", module)
    monkeypatch.setattr(skiptrace, "normalize", module, raising=False)
    return module


def make_lead(lead_id: str | None = None, problem: str | None = None, **overrides: str) -> LeadInput:
    values = {
        "first_name": "Ann",
        "last_name": "Lee",
        "street": "1 Main St",
        "city": "Tampa",
        "state": "FL",
        "zip": "33610",
    }
    values.update(overrides)
    return LeadInput(lead_id=lead_id, problem=problem, **values)


def test_a_lead_id_from_the_source_is_kept(fake_normalize: types.ModuleType) -> None:
    assert derive_lead_id(make_lead("A-1")) == "A-1"


def test_derived_id_is_l_dash_16_hex_of_the_normalized_signature(fake_normalize: types.ModuleType) -> None:
    lead = make_lead()
    signature = fake_normalize.normalize_lead(**lead.normalize_kwargs()).signature
    assert derive_lead_id(lead) == "L-" + signature[:16]


def test_derived_id_is_equal_for_two_spellings_with_the_stand_in(fake_normalize: types.ModuleType) -> None:
    assert derive_lead_id(make_lead(first_name="ANN", street="1  MAIN st")) == derive_lead_id(make_lead())
    assert derive_lead_id(make_lead(street="2 Main St")) != derive_lead_id(make_lead())


def test_a_lead_that_does_not_normalize_gets_a_hash_of_its_raw_fields(
    fake_normalize: types.ModuleType,
) -> None:
    lead = make_lead(street="")
    raw = "Ann|Lee||Tampa|FL|33610"
    assert derive_lead_id(lead) == "L-" + hashlib.sha256(raw.encode()).hexdigest()[:16]
    assert derive_lead_id(make_lead(street="", first_name="ANN")) != derive_lead_id(lead)


def test_a_row_with_an_intake_problem_gets_a_hash_of_its_raw_fields(fake_normalize: types.ModuleType) -> None:
    clean, flagged = make_lead(), make_lead(problem="row has more cells than the header")
    assert derive_lead_id(flagged) != derive_lead_id(clean)
    raw = "Ann|Lee|1 Main St|Tampa|FL|33610"
    assert derive_lead_id(flagged) == "L-" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def test_a_non_hex_signature_is_hashed_to_16_hex(
    fake_normalize: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        fake_normalize, "normalize_lead", lambda **_: types.SimpleNamespace(signature=("1 MAIN ST", "33610"))
    )
    derived = derive_lead_id(make_lead())
    assert derived.startswith("L-") and len(derived) == 18
    assert int(derived[2:], 16) >= 0 and derived == derive_lead_id(make_lead())


def test_derived_ids_are_stable_across_reimports_of_the_same_real_file() -> None:
    pytest.importorskip("skiptrace.normalize")
    text = "Owner First Name,Owner Last Name,Property Address,Property City,Property State,Property Zip\r\n"
    text += "Denise,Alvarez,4410 Oak Hollow Dr,Tampa,FL,33610\r\nTom,Baker,,Memphis,TN,38103\r\n"
    first = [derive_lead_id(lead) for lead in read(text)]
    second = [derive_lead_id(lead) for lead in read(text)]
    assert first == second
    assert all(lead_id.startswith("L-") and len(lead_id) == 18 for lead_id in first)
    assert first[0] != first[1]


def test_derived_ids_are_equal_for_two_spellings_of_the_same_real_lead() -> None:
    pytest.importorskip("skiptrace.normalize")
    text = "First Name,Last Name,Street,City,State,Zip\r\n"
    text += "Denise,Alvarez,4410 Oak Hollow Dr,Tampa,FL,33610\r\n"
    text += "DENISE,ALVAREZ,  4410  OAK HOLLOW DR ,TAMPA,fl,33610\r\n"
    text += "Denise,Alvarez,4412 Oak Hollow Dr,Tampa,FL,33610\r\n"
    same, spelled, other = (derive_lead_id(lead) for lead in read(text))
    assert same == spelled
    assert same != other


def test_sample_without_its_id_column_derives_one_id_per_real_lead() -> None:
    pytest.importorskip("skiptrace.normalize")
    text = SAMPLE.read_bytes().decode("utf-8-sig")
    without_ids = "".join(line.split(",", 1)[1] for line in text.splitlines(keepends=True))
    ids = [derive_lead_id(lead) for lead in read(without_ids)]
    assert len(ids) == 20
    assert ids == [derive_lead_id(lead) for lead in read(without_ids)]  # a re-import maps the same
    assert ids[0] == ids[1]  # case, punctuation, ZIP+4
    assert ids[8] == ids[9]  # spacing, "Street" spelled out
    assert ids[2] == ids[3] != ids[4]  # the same unit spelled two ways; another unit is another lead
    assert ids[6] != ids[7]  # another directional
