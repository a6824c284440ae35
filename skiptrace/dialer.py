"""The dialer CSV: one row per lead, in the exact column order the dialer imports.

Used by a run's ``enriched.csv`` (``skiptrace.reports``) and by the admin contacts export, so both
produce the same bytes for the same contacts:

- ``Phone1..3`` are the callable numbers only (never DNC- or TCPA-flagged), mobile first, then by
  confidence (highest first, unknown last), provider order otherwise; written as 10 digits.
- ``DNC_Excluded`` counts the numbers left out because they are DNC or TCPA flagged.
- ``Email1..3`` keep the provider order, the primary address first.
- Every cell goes through :func:`safe_cell` (spreadsheet formula injection), every field is quoted,
  lines end with CRLF and the file is UTF-8 with a BOM (Excel opens it as UTF-8).
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
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_PREFIXES):
        return "'" + text
    return text


def phone_10(number: Any) -> str | None:
    """``+18135550142`` -> ``8135550142``; None when it is not a 10-digit (NANP) number."""
    if number is None or isinstance(number, bool):
        return None
    digits = _NON_DIGITS.sub("", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return digits if len(digits) == 10 else None


def _phone_sort_key(phone: dict) -> tuple[bool, bool, int]:
    confidence = phone.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        confidence = None
    return (phone.get("type") != MOBILE, confidence is None, -(confidence or 0))


def callable_phones(contacts: dict | None) -> tuple[list[str], int]:
    """(callable numbers as 10 digits in dialer order, how many numbers DNC/TCPA left out).

    A number listed twice counts once; if any of its entries is DNC or TCPA flagged, it is left out.
    """
    phones = [p for p in ((contacts or {}).get("phones") or ()) if isinstance(p, dict)]
    flagged: set[str] = set()
    for p in phones:
        digits = phone_10(p.get("number"))
        if digits and (p.get("isDoNotCall") or p.get("isTcpa")):
            flagged.add(digits)
    out: list[str] = []
    seen: set[str] = set()
    for p in sorted(phones, key=_phone_sort_key):  # sorted() is stable: provider order breaks ties
        digits = phone_10(p.get("number"))
        if not digits or digits in flagged or digits in seen:
            continue
        seen.add(digits)
        out.append(digits)
    return out, len(flagged)


def ordered_emails(contacts: dict | None) -> list[str]:
    """Email addresses in provider order, primary first, without repeats (case-insensitive)."""
    emails = [e for e in ((contacts or {}).get("emails") or ()) if isinstance(e, dict)]
    out: list[str] = []
    seen: set[str] = set()
    for e in sorted(emails, key=lambda e: not e.get("isPrimary")):
        address = str(e.get("address") or "").strip()
        if not address or address.lower() in seen:
            continue
        seen.add(address.lower())
        out.append(address)
    return out


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
    phones, excluded = callable_phones(contacts)
    emails = ordered_emails(contacts)
    phone_cells = (phones + [""] * MAX_PHONES)[:MAX_PHONES]
    email_cells = (emails + [""] * MAX_EMAILS)[:MAX_EMAILS]
    row = [
        lead_id,
        address,
        owner,
        *phone_cells,
        *email_cells,
        source if phone_cells[0] else "",
        source if email_cells[0] else "",
        "yes" if cached else "no",
        str(excluded),
    ]
    return [safe_cell(cell) for cell in row]


def _writer(fh: TextIO) -> Any:
    return csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")


def write_dialer_csv(rows: Iterable[list[str]], fh: TextIO) -> int:
    """Header + rows into ``fh`` (opened with ``encoding="utf-8-sig", newline=""``); returns rows written.

    Cells pass through :func:`safe_cell` again (it is idempotent), so rows built elsewhere are safe too.
    """
    writer = _writer(fh)
    writer.writerow(DIALER_HEADER)
    count = 0
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
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
        writer.writerow([safe_cell(cell) for cell in row])
        pending += 1
        if pending >= _STREAM_CHUNK_ROWS:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            pending = 0
    tail = buf.getvalue()
    if tail:
        yield tail
