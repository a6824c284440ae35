"""The dialer CSV: one row per lead, in the exact column order the dialer imports.

Used by a run's ``enriched.csv`` (``skiptrace.reports``) and by the admin contacts export, so both
produce the same bytes for the same contacts:

- ``Phone1..3`` are the callable numbers only, mobile first, then by confidence (highest first,
  unknown last), provider order otherwise; written as 10 digits. A number is not callable when it
  is DNC or TCPA flagged, or when its person (``contacts["persons"][phone["person"]]``, BatchData
  V3) is a litigator or deceased. A number whose person is not known (no ``person`` index, or one
  that points nowhere) in an answer flagged ``litigator`` is left out too: ambiguity never makes
  a number callable.
- ``DNC_Excluded`` counts the numbers left out for any of those reasons, each number once.
- ``Email1..3`` keep the provider order, the primary address first.
- Every cell goes through :func:`safe_cell` (spreadsheet formula injection), every field is quoted,
  lines end with CRLF and the file is UTF-8 with a BOM (Excel opens it as UTF-8).

Contacts stored before V3 (no ``persons``, no ``person`` per phone) give the same rows as before.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

DIALER_HEADER = [
    "LeadID",
    "Address",
    "Owner",
    "Phone1",
    "Phone2",
    "Phone3",
    "Email1",
    "Email2",
    "Email3",
    "Phone1_source",
    "Email1_source",
    "Cached",
    "DNC_Excluded",
]

MAX_PHONES = 3
MAX_EMAILS = 3
MOBILE = "Mobile"
BOM = "\ufeff"

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NON_DIGITS = re.compile(r"\D")
_STREAM_CHUNK_ROWS = 500


def safe_cell(value: Any) -> str:
    """The cell as text, with a leading ``'`` when a spreadsheet could read it as a formula."""
    text = value if value.__class__ is str else ("" if value is None else str(value))
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def _safe_row(row: Iterable[Any]) -> list[str]:
    # safe_cell inlined for plain strings: this runs for every cell of a 100k-row file.
    return [
        ("'" + c if c.startswith(_FORMULA_PREFIXES) else c) if c.__class__ is str else safe_cell(c)
        for c in row
    ]


def phone_10(number: Any) -> str | None:
    """``+18135550142`` -> ``8135550142``; None when it is not a 10-digit (NANP) number."""
    if number.__class__ is str and len(number) == 12 and number.startswith("+1") and number[2:].isdigit():
        return number[2:]  # E.164, what the parser stores: the fast path
    if number is None or isinstance(number, bool):
        return None
    digits = _NON_DIGITS.sub("", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return digits if len(digits) == 10 else None


def _phone_sort_key(item: tuple[dict, str]) -> tuple[bool, bool, float]:
    phone = item[0]
    confidence = phone.get("confidence")
    if confidence is None or isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return (phone.get("type") != MOBILE, True, 0)
    return (phone.get("type") != MOBILE, False, -confidence)


def person_of(contacts: dict | None, item: dict) -> dict | None:
    """The entry of ``contacts["persons"]`` a phone or email belongs to; None when not known."""
    index = item.get("person")
    persons = (contacts or {}).get("persons")
    if index.__class__ is not int or index < 0 or not isinstance(persons, list) or index >= len(persons):
        return None
    person = persons[index]
    return person if isinstance(person, dict) else None


def person_excluded(person: dict | None) -> bool:
    """True when the person's numbers may never be dialed (a litigator, or deceased)."""
    return bool(person) and bool(person.get("litigator") or person.get("deceased"))


def excluded_by_person(contacts: dict | None, phone: dict) -> bool:
    """True when the phone's person forbids dialing it: a litigator or deceased person, or no known
    person in an answer flagged ``litigator``."""
    person = person_of(contacts, phone)
    if person is None:
        return bool((contacts or {}).get("litigator"))
    return person_excluded(person)


def callable_phones(contacts: dict | None) -> tuple[list[str], int]:
    """(callable numbers as 10 digits in dialer order, how many numbers were left out).

    Left out: DNC or TCPA flagged numbers and the numbers of a litigator or deceased person (see the
    module docstring). A number listed twice counts once; if any of its entries is left out, it is.
    """
    contacts = contacts or {}
    # Old-shaped contacts (no persons, not a litigator answer) skip the per-phone person look-up.
    check_persons = bool(contacts.get("persons") or contacts.get("litigator"))
    flagged: set[str] = set()
    candidates: list[tuple[dict, str]] = []
    for p in contacts.get("phones") or ():
        if not isinstance(p, dict):
            continue
        digits = phone_10(p.get("number"))
        if not digits:
            continue
        if p.get("isDoNotCall") or p.get("isTcpa") or (check_persons and excluded_by_person(contacts, p)):
            flagged.add(digits)
        else:
            candidates.append((p, digits))
    out: list[str] = []
    if len(candidates) > 1:
        candidates.sort(key=_phone_sort_key)  # list.sort is stable: provider order breaks ties
    for _, digits in candidates:
        if digits not in flagged and digits not in out:
            out.append(digits)
    return out, len(flagged)


def ordered_emails(contacts: dict | None) -> list[str]:
    """Email addresses in provider order, primary first, without repeats (case-insensitive)."""
    emails = [e for e in ((contacts or {}).get("emails") or ()) if isinstance(e, dict)]
    if len(emails) > 1:
        emails.sort(key=lambda e: not e.get("isPrimary"))
    out: list[str] = []
    seen: set[str] = set()
    for e in emails:
        address = str(e.get("address") or "").strip()
        if not address or address.lower() in seen:
            continue
        seen.add(address.lower())
        out.append(address)
    return out


def contact_cells(contacts: dict | None, source: str = "batchdata") -> tuple[list[str], str]:
    """The contact part of a row: (``Phone1..Email1_source`` cells, ``DNC_Excluded`` cell), already safe.

    Depends only on the contacts, so callers may compute it once per provider call.
    """
    phones, excluded = callable_phones(contacts)
    emails = ordered_emails(contacts)
    phone_cells = (phones + [""] * MAX_PHONES)[:MAX_PHONES]
    email_cells = (emails + [""] * MAX_EMAILS)[:MAX_EMAILS]
    # Phone cells are digits only; emails and the source name could start with "+" or "-".
    cells = [
        *phone_cells,
        *_safe_row(email_cells),
        safe_cell(source) if phone_cells[0] else "",
        safe_cell(source) if email_cells[0] else "",
    ]
    return cells, str(excluded)


_EMPTY_CONTACT_CELLS = [""] * (MAX_PHONES + MAX_EMAILS + 2)


def row_from_cells(
    *, lead_id: str, address: str, owner: str, cells: tuple[list[str], str] | None, cached: bool
) -> list[str]:
    """A dialer row from :func:`contact_cells` output (None = no contacts: empty cells, ``0`` excluded)."""
    contact, excluded = cells if cells is not None else (_EMPTY_CONTACT_CELLS, "0")
    return [
        safe_cell(lead_id),
        safe_cell(address),
        safe_cell(owner),
        *contact,
        "yes" if cached else "no",
        excluded,
    ]


def dialer_row(
    *,
    lead_id: str,
    address: str,
    owner: str,
    contacts: dict | None,
    source: str = "batchdata",
    cached: bool,
) -> list[str]:
    """One dialer CSV row (``DIALER_HEADER`` order). ``contacts=None`` (failed, unmatched) = empty cells."""
    return row_from_cells(
        lead_id=lead_id, address=address, owner=owner, cells=contact_cells(contacts, source), cached=cached
    )


def _writer(fh: TextIO) -> Any:
    return csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")


def write_dialer_csv(rows: Iterable[list[str]], fh: TextIO, *, _rows_are_safe: bool = False) -> int:
    """Header + rows into ``fh`` (opened with ``encoding="utf-8-sig", newline=""``); returns rows written.

    Cells pass through :func:`safe_cell` again (it is idempotent), so rows built elsewhere are safe
    too; ``_rows_are_safe`` skips that for rows made by :func:`dialer_row` / :func:`row_from_cells`.
    """
    writer = _writer(fh)
    writer.writerow(DIALER_HEADER)
    count = 0
    if _rows_are_safe:
        writerow = writer.writerow
        for row in rows:
            writerow(row)
            count += 1
        return count
    for row in rows:
        writer.writerow(_safe_row(row))
        count += 1
    return count


def stream_dialer_csv(rows: Iterable[list[str]]) -> Iterator[str]:
    """The same text as :func:`write_dialer_csv` plus the BOM, in chunks (for a StreamingHttpResponse)."""
    buf = io.StringIO()
    writer = _writer(buf)
    buf.write(BOM)
    writer.writerow(DIALER_HEADER)
    pending = 0
    for row in rows:
        writer.writerow(_safe_row(row))
        pending += 1
        if pending >= _STREAM_CHUNK_ROWS:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            pending = 0
    tail = buf.getvalue()
    if tail:
        yield tail
