from __future__ import annotations

import csv
import io

import pytest

from skiptrace.dialer import (
    DIALER_HEADER,
    dialer_row,
    safe_cell,
    stream_dialer_csv,
    write_dialer_csv,
)


def phone(number, type_="Mobile", *, dnc=False, tcpa=False, confidence=None):
    return {"number": number, "type": type_, "isDoNotCall": dnc, "isTcpa": tcpa, "confidence": confidence}


def email(address, *, primary=False, confidence=None):
    return {"address": address, "isPrimary": primary, "confidence": confidence}


def contacts(phones=(), emails=()):
    return {
        "phones": list(phones),
        "emails": list(emails),
        "matched": bool(phones or emails),
        "litigator": False,
    }


def row(contacts_=None, *, lead_id="L1", address="1 Main St, Tampa, FL 33610", owner="Ann Lee", cached=False):
    return dialer_row(lead_id=lead_id, address=address, owner=owner, contacts=contacts_, cached=cached)


def as_dict(r):
    return dict(zip(DIALER_HEADER, r, strict=True))


def csv_text(rows) -> str:
    fh = io.StringIO()
    write_dialer_csv(rows, fh)
    return fh.getvalue()


def test_header_is_the_dialer_column_order():
    assert DIALER_HEADER == [
        "LeadID", "Address", "Owner", "Phone1", "Phone2", "Phone3", "Email1", "Email2", "Email3",
        "Phone1_source", "Email1_source", "Cached", "DNC_Excluded", "DNC_Stale",
    ]  # fmt: skip


def test_phones_are_written_as_ten_digits():
    r = as_dict(row(contacts([phone("+18135550142"), phone("18135550143"), phone("(813) 555-0144")])))
    assert (r["Phone1"], r["Phone2"], r["Phone3"]) == ("8135550142", "8135550143", "8135550144")


def test_dnc_and_tcpa_numbers_are_excluded_and_counted():
    r = as_dict(
        row(
            contacts(
                [
                    phone("+18135550101", dnc=True, confidence=99),
                    phone("+18135550102", confidence=50),
                    phone("+18135550103", tcpa=True, confidence=90),
                    phone("+18135550104", dnc=True, tcpa=True),
                ]
            )
        )
    )
    assert r["Phone1"] == "8135550102"
    assert r["Phone2"] == r["Phone3"] == ""
    assert r["DNC_Excluded"] == "3"


def test_a_number_flagged_in_any_entry_is_never_dialed():
    r = as_dict(row(contacts([phone("+18135550101", confidence=90), phone("+18135550101", dnc=True)])))
    assert r["Phone1"] == ""
    assert r["DNC_Excluded"] == "1"


def test_mobile_first_then_confidence_desc_with_unknown_confidence_last():
    r = as_dict(
        row(
            contacts(
                [
                    phone("+18135550001", "Land Line", confidence=99),
                    phone("+18135550002", "Mobile", confidence=None),
                    phone("+18135550003", "Mobile", confidence=40),
                    phone("+18135550004", "Mobile", confidence=80),
                ]
            )
        )
    )
    assert (r["Phone1"], r["Phone2"], r["Phone3"]) == ("8135550004", "8135550003", "8135550002")


def test_phone_order_is_stable_for_equal_keys():
    numbers = [f"+1813555001{i}" for i in range(3)]
    r = as_dict(row(contacts([phone(n, "Unknown", confidence=70) for n in numbers])))
    assert [r["Phone1"], r["Phone2"], r["Phone3"]] == [n[2:] for n in numbers]


def test_non_mobile_types_rank_together_by_confidence():
    r = as_dict(
        row(
            contacts(
                [
                    phone("+18135550001", "Unknown", confidence=10),
                    phone("+18135550002", "Land Line", confidence=60),
                ]
            )
        )
    )
    assert (r["Phone1"], r["Phone2"]) == ("8135550002", "8135550001")


def test_only_three_phones_and_three_emails_are_kept():
    r = as_dict(
        row(
            contacts(
                [phone(f"+1813555010{i}", confidence=90 - i) for i in range(5)],
                [email(f"p{i}@example.com") for i in range(5)],
            )
        )
    )
    assert r["Phone3"] == "8135550102"
    assert r["Email3"] == "p2@example.com"
    assert r["DNC_Excluded"] == "0"


def test_emails_keep_given_order_with_primary_first():
    r = as_dict(
        row(
            contacts(
                [], [email("b@example.com"), email("c@example.com"), email("a@example.com", primary=True)]
            )
        )
    )
    assert (r["Email1"], r["Email2"], r["Email3"]) == ("a@example.com", "b@example.com", "c@example.com")


def test_sources_are_set_only_when_the_first_phone_or_email_exists():
    r = as_dict(row(contacts([], [email("a@example.com", primary=True)])))
    assert r["Phone1_source"] == ""
    assert r["Email1_source"] == "batchdata"
    r = as_dict(row(contacts([phone("+18135550142")], [])))
    assert (r["Phone1_source"], r["Email1_source"]) == ("batchdata", "")


def test_source_falls_on_phone1_only_when_a_callable_phone_exists():
    r = as_dict(row(contacts([phone("+18135550142", dnc=True)])))
    assert r["Phone1"] == r["Phone1_source"] == ""
    assert r["DNC_Excluded"] == "1"


def test_cached_column_says_yes_or_no():
    assert as_dict(row(contacts(), cached=True))["Cached"] == "yes"
    assert as_dict(row(contacts(), cached=False))["Cached"] == "no"


@pytest.mark.parametrize("contacts_", [None, contacts(), {"matched": False}, {}])
def test_failed_or_unmatched_lead_keeps_a_row_with_empty_contact_cells(contacts_):
    r = as_dict(row(contacts_, lead_id="L9"))
    assert r["LeadID"] == "L9"
    assert r["Address"] and r["Owner"]
    assert all(r[k] == "" for k in DIALER_HEADER[3:11])
    assert r["DNC_Excluded"] == "0"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("=1+2", "'=1+2"),
        ("+18135550142", "'+18135550142"),
        ("-5", "'-5"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tcmd", "'\tcmd"),
        ("\rcmd", "'\rcmd"),
        ("Ann Lee", "Ann Lee"),
        ("8135550142", "8135550142"),
        ("", ""),
        (None, ""),
    ],
)
def test_safe_cell_prefixes_formula_starts_only(value, expected):
    assert safe_cell(value) == expected


def test_formula_cells_are_prefixed_in_the_row():
    r = as_dict(row(contacts(), owner='=HYPERLINK("http://x","y")', address="@evil", lead_id="-1"))
    assert r["Owner"] == '\'=HYPERLINK("http://x","y")'
    assert r["Address"] == "'@evil"
    assert r["LeadID"] == "'-1"


def test_write_quotes_every_field_and_ends_lines_with_crlf():
    text = csv_text([row(contacts([phone("+18135550142")]))])
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert len(lines) == 3
    assert lines[0] == ",".join(f'"{h}"' for h in DIALER_HEADER)
    for line in lines[:2]:
        fields = next(csv.reader([line]))
        assert line == ",".join('"' + f.replace('"', '""') + '"' for f in fields)


def test_write_returns_rows_written_and_prefixes_cells_built_elsewhere():
    fh = io.StringIO()
    n = write_dialer_csv([["=x"] + [""] * 13, ["ok"] + [""] * 13], fh)
    assert n == 2
    assert fh.getvalue().splitlines()[1].startswith('"\'=x"')


def test_file_has_a_bom_and_utf8_names_survive_a_round_trip(tmp_path):
    names = ["José Núñez", "Zoë 🏠 O'Brien", "北京 LLC"]
    path = tmp_path / "out.csv"
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        write_dialer_csv([row(contacts(), lead_id=f"L{i}", owner=n) for i, n in enumerate(names)], fh)
    assert path.read_bytes().startswith(b'\xef\xbb\xbf"LeadID"')
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == DIALER_HEADER
    assert [r[2] for r in rows[1:]] == names


def test_stream_yields_the_same_text_as_write_with_bom_first():
    rows = [row(contacts([phone(f"+1813555{i:04d}")]), lead_id=f"L{i}", owner="Zoë") for i in range(1234)]
    chunks = list(stream_dialer_csv(rows))
    assert len(chunks) > 1
    assert chunks[0].startswith('\ufeff"LeadID"')
    assert "".join(chunks) == "\ufeff" + csv_text(rows)


def test_stream_of_no_rows_is_bom_and_header():
    assert "".join(stream_dialer_csv([])) == "\ufeff" + csv_text([])


def person(name, *, owner=True, litigator=False, deceased=False):
    return {"name": name, "propertyOwner": owner, "litigator": litigator, "deceased": deceased}


def with_persons(contacts_, persons, people_of):
    """``contacts_`` in the V3 shape: ``persons``, and each phone's person index from ``people_of``."""
    out = {**contacts_, "persons": persons, "litigator": any(p["litigator"] for p in persons)}
    out["phones"] = [{**p, "person": i} for p, i in zip(contacts_["phones"], people_of, strict=True)]
    return out


def test_numbers_of_a_litigator_or_deceased_person_are_excluded_and_counted_like_dnc():
    c = with_persons(
        contacts([phone("+18135550101", "Land Line", confidence=10), phone("+18135550102", confidence=99),
                  phone("+18135550103", confidence=98), phone("+18135550104", dnc=True)]),
        [person("Owner"), person("Relative", owner=False, litigator=True),
         person("Late", owner=False, deceased=True)],
        [0, 1, 2, 0],
    )
    r = as_dict(row(c))
    assert (r["Phone1"], r["Phone2"], r["Phone3"]) == ("8135550101", "", "")
    assert r["DNC_Excluded"] == "3"


def test_owners_without_flags_leave_the_row_as_it_was():
    c = contacts([phone("+18135550001", "Land Line", confidence=99), phone("+18135550002", confidence=40),
                  phone("+18135550003", dnc=True)], [email("a@example.com", primary=True)])
    v3 = with_persons(c, [person("Owner"), person("Co-owner")], [0, 1, 1])
    assert row(v3) == row(c)


def test_a_property_owners_landline_comes_before_a_non_owners_mobile():
    c = contacts([phone("+18135550001", "Land Line", confidence=99), phone("+18135550002", confidence=40)])
    v3 = with_persons(c, [person("Owner"), person("Spouse", owner=False)], [0, 1])
    r = as_dict(row(v3))
    assert (r["Phone1"], r["Phone2"]) == ("8135550001", "8135550002")


def test_a_number_listed_for_the_owner_and_for_a_litigator_is_left_out_once():
    c = with_persons(contacts([phone("+18135550101"), phone("+18135550101")]),
                     [person("Owner"), person("Relative", owner=False, litigator=True)], [0, 1])
    r = as_dict(row(c))
    assert r["Phone1"] == "" and r["DNC_Excluded"] == "1"
