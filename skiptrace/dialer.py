"""The dialer CSV: one row per lead, in the exact column order the dialer imports.

Used by a run's ``enriched.csv`` (``skiptrace.reports``), the console export and the API export
(``contacts.export``), so every path produces the same bytes for the same contacts and clock.

**Which numbers are callable** (the only ones in ``Phone1..3``): not DNC flagged, not TCPA flagged,
not of a litigator or a deceased person (``contacts["persons"][phone["person"]]``), and with a DNC
status no older than ``DNC_MAX_AGE_DAYS`` (the FTC rule: 31 days). A number whose person is not
known (no ``person`` index, or one that points nowhere) in an answer flagged ``litigator`` is left
out too: ambiguity never makes a number callable. A number listed twice is left out if any of its
entries is.

**The DNC time** of a phone is ``phone["dncCheckedAt"]`` when the contacts carry it (rows of the
console), else the ``checked_at`` given for the whole answer (a run's calls: the call's
``finished_at``). With a freshness cut-off (``fresh_after``), a phone without a time is stale.
Without one (``fresh_after=None``) freshness is not judged: only for code that shows a fresh answer.

**The order** of the callable numbers (:func:`phone_rank_key`): property owners first (then persons
whose ownership is not known, then the others); then tested and reachable mobiles, then other
mobiles, then other types, a number known unreachable last; then the provider's rank (V3, 1 best)
or score (V1, highest first), unknown last; then the provider's order.

- ``DNC_Excluded`` counts the numbers left out as DNC, TCPA, litigator's or deceased's, each once.
- ``DNC_Stale`` counts the numbers left out only because their DNC status is stale, each once.
- ``Email1..3`` keep the provider order, the primary address first.
- Every cell goes through :func:`safe_cell` (spreadsheet formula injection), every field is quoted,
  lines end with CRLF and the file is UTF-8 with a BOM (Excel opens it as UTF-8).

The ``wide`` profile (:data:`WIDE_HEADER`) lists up to 10 numbers, callable ones first in the same
order, then the others, each with its type, DNC, TCPA, person and a ``Flags`` cell naming every
reason it may not be dialed (never an unflagged non-callable number), and up to 5 emails.

Contacts stored before V3 (no ``persons``, no ``person`` per phone) give the same rows as before.
"""

from __future__ import annotations

import csv
import datetime as dt
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
    "DNC_Stale",
]

MAX_PHONES = 3
MAX_EMAILS = 3
WIDE_PHONES = 10
WIDE_EMAILS = 5
WIDE_PHONE_FIELDS = ("", "_Type", "_DNC", "_TCPA", "_Owner", "_Flags")
WIDE_HEADER = [
    "LeadID",
    "Address",
    "Owner",
    *(f"Phone{n}{suffix}" for n in range(1, WIDE_PHONES + 1) for suffix in WIDE_PHONE_FIELDS),
    *(f"Email{n}" for n in range(1, WIDE_EMAILS + 1)),
    "Phone1_source",
    "Email1_source",
    "Cached",
    "DNC_Excluded",
    "DNC_Stale",
]
PROFILES = ("seed", "wide")
HEADERS = {"seed": DIALER_HEADER, "wide": WIDE_HEADER}

MOBILE = "Mobile"
LANDLINE = "Landline"
VOIP = "VoIP"
UNKNOWN = "Unknown"
PHONE_TYPES = (MOBILE, LANDLINE, VOIP, UNKNOWN)
BOM = "\ufeff"

# Why a number is not callable (the wide profile's Flags cell, the lead page).
FLAG_DNC = "dnc"
FLAG_TCPA = "tcpa"
FLAG_LITIGATOR = "litigator"
FLAG_DECEASED = "deceased"
FLAG_STALE = "dnc_stale"
BLOCKING_FLAGS = (FLAG_DNC, FLAG_TCPA, FLAG_LITIGATOR, FLAG_DECEASED)

_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_NON_DIGITS = re.compile(r"\D")
_NON_LETTERS = re.compile(r"[^a-z]")
_STREAM_CHUNK_ROWS = 500
_TYPE_KEYS = {
    "mobile": MOBILE, "cell": MOBILE, "cellular": MOBILE, "wireless": MOBILE, "mobilephone": MOBILE,
    "cellphone": MOBILE,
    "landline": LANDLINE, "land": LANDLINE, "fixedline": LANDLINE, "wireline": LANDLINE,
    "residential": LANDLINE,
    "voip": VOIP, "fixedvoip": VOIP, "nonfixedvoip": VOIP, "voiceoverip": VOIP,
}
_TYPE_CACHE: dict[Any, str] = {t: t for t in PHONE_TYPES}


def normalize_type(value: Any) -> str:
    """A phone type as Mobile / Landline / VoIP / Unknown (the provider's and older rows' "Land Line"
    is Landline)."""
    if value.__class__ is str:
        cached = _TYPE_CACHE.get(value)
        if cached is not None:
            return cached
        kind = _TYPE_KEYS.get(_NON_LETTERS.sub("", value.lower()), UNKNOWN)
        if len(_TYPE_CACHE) < 256:
            _TYPE_CACHE[value] = kind
        return kind
    return UNKNOWN


def fresh_after(now: dt.datetime, max_age_days: float | None = None) -> dt.datetime | None:
    """The oldest DNC time still fresh at ``now`` (``DNC_MAX_AGE_DAYS`` by default); None when no status
    is fresh (a maximum age of 0: every status is stale)."""
    if max_age_days is None:
        from django.conf import settings

        max_age_days = settings.DNC_MAX_AGE_DAYS
    if max_age_days <= 0:
        return None
    return now - dt.timedelta(days=max_age_days)


# ``fresh_after`` argument meaning "no status is fresh" (maximum age 0), distinct from None (not judged).
ALL_STALE = dt.datetime.max.replace(tzinfo=dt.UTC)


def freshness_cutoff(now: dt.datetime, max_age_days: float | None = None) -> dt.datetime:
    """What export paths pass as ``fresh_after``: :func:`fresh_after`, or :data:`ALL_STALE`."""
    cutoff = fresh_after(now, max_age_days)
    return ALL_STALE if cutoff is None else cutoff


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


def _provider_order_key(phone: dict) -> tuple[int, float]:
    rank = phone.get("rank")
    if rank.__class__ is int:
        return (0, rank)  # V3: 1 = best
    confidence = phone.get("confidence")
    if confidence is None or isinstance(confidence, bool) or not isinstance(confidence, int | float):
        return (2, 0)
    return (1, -confidence)  # V1 score: highest first


def _owner_tier(person: dict | None) -> int:
    owner = person.get("propertyOwner") if person else None
    return 0 if owner is True else (2 if owner is False else 1)


def _line_tier(phone: dict) -> int:
    reachable = phone.get("reachable")
    if reachable is False:
        return 3
    if normalize_type(phone.get("type")) == MOBILE:
        return 0 if reachable is True and phone.get("tested") is True else 1
    return 2


def phone_rank_key(phone: dict, person: dict | None) -> tuple:
    """The dialer order of one number (lowest first): owner, line, the provider's rank or score."""
    return (_owner_tier(person), _line_tier(phone), _provider_order_key(phone))


_OWNER_WORDS = ("property owner", "ownership not known", "not the property owner")
_LINE_WORDS = ("tested reachable mobile", "mobile", "not a mobile", "known unreachable")


def rank_reason(phone: dict, person: dict | None) -> str:
    """Why a number has its place, in words (the lead page): the three parts of :func:`phone_rank_key`."""
    kind, value = _provider_order_key(phone)
    provider = f"rank {value}" if kind == 0 else (f"score {-value:g}" if kind == 1 else "no rank or score")
    return f"{_OWNER_WORDS[_owner_tier(person)]} · {_LINE_WORDS[_line_tier(phone)]} · {provider}"


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


def is_stale(checked: dt.datetime | None, fresh_after: dt.datetime | None) -> bool:
    """A DNC status checked at ``checked`` is stale against the cut-off (None: not judged)."""
    if fresh_after is None:
        return False
    return checked is None or checked < fresh_after


def _entry_flags(contacts: dict, phone: dict, person: dict | None, check_persons: bool,
                 checked_at: dt.datetime | None, fresh_after: dt.datetime | None) -> set[str]:
    flags = set()
    if phone.get("isDoNotCall"):
        flags.add(FLAG_DNC)
    if phone.get("isTcpa"):
        flags.add(FLAG_TCPA)
    if check_persons:
        if person is None:
            if contacts.get("litigator"):
                flags.add(FLAG_LITIGATOR)
        else:
            if person.get("litigator"):
                flags.add(FLAG_LITIGATOR)
            if person.get("deceased"):
                flags.add(FLAG_DECEASED)
    if fresh_after is not None and is_stale(phone.get("dncCheckedAt", checked_at), fresh_after):
        flags.add(FLAG_STALE)
    return flags


class PlannedPhone:
    """One distinct number of a lead in dialer order: its best-ranked entry, person and flags."""

    __slots__ = ("digits", "phone", "person", "flags")

    def __init__(self, digits: str, phone: dict, person: dict | None, flags: set[str]) -> None:
        self.digits, self.phone, self.person, self.flags = digits, phone, person, flags

    @property
    def callable(self) -> bool:
        return not self.flags

    @property
    def blocked(self) -> bool:
        """Left out for a flag of the number or its person (counted in ``DNC_Excluded``)."""
        return any(f in self.flags for f in BLOCKING_FLAGS)

    def flag_text(self) -> str:
        return "|".join(f for f in (*BLOCKING_FLAGS, FLAG_STALE) if f in self.flags)


def phone_plan(
    contacts: dict | None, *, checked_at: dt.datetime | None = None, fresh_after: dt.datetime | None = None
) -> list[PlannedPhone]:
    """Every distinct number of ``contacts``: callable ones first, each group in dialer order.

    A number listed twice is one entry with the flags of all its entries and the place of its
    best-ranked entry.
    """
    contacts = contacts or {}
    # Old-shaped contacts (no persons, not a litigator answer) skip the per-phone person look-up.
    check_persons = bool(contacts.get("persons") or contacts.get("litigator"))
    ranked: list[tuple[tuple, int, str, dict, dict | None]] = []
    flags_of: dict[str, set[str]] = {}
    for n, p in enumerate(contacts.get("phones") or ()):
        if not isinstance(p, dict):
            continue
        digits = phone_10(p.get("number"))
        if not digits:
            continue
        person = person_of(contacts, p) if check_persons else None
        flags = _entry_flags(contacts, p, person, check_persons, checked_at, fresh_after)
        if digits in flags_of:
            flags_of[digits] |= flags
        else:
            flags_of[digits] = flags
        ranked.append((phone_rank_key(p, person), n, digits, p, person))
    if len(ranked) > 1:
        ranked.sort(key=lambda r: (r[0], r[1]))
    callable_: list[PlannedPhone] = []
    others: list[PlannedPhone] = []
    for _, _, digits, p, person in ranked:
        flags = flags_of.pop(digits, None)
        if flags is None:  # a repeat of a number already placed
            continue
        (others if flags else callable_).append(PlannedPhone(digits, p, person, flags))
    return callable_ + others


def dialable_phones(
    contacts: dict | None, *, checked_at: dt.datetime | None = None, fresh_after: dt.datetime | None = None
) -> tuple[list[str], int, int]:
    """(callable numbers as 10 digits in dialer order, how many were left out for a flag, how many only
    because their DNC status is stale).

    The same numbers, order and counts as :func:`phone_plan`, without building the plan: this runs
    once per provider call of a 100,000-row file.
    """
    contacts = contacts or {}
    check_persons = bool(contacts.get("persons") or contacts.get("litigator"))
    litigator_answer = bool(contacts.get("litigator"))
    judge = fresh_after is not None
    answer_stale = judge and (checked_at is None or checked_at < fresh_after)
    blocked: set[str] = set()
    stale: set[str] = set()
    candidates: list[tuple[dict, str, dict | None]] = []
    for p in contacts.get("phones") or ():
        if not isinstance(p, dict):
            continue
        digits = phone_10(p.get("number"))
        if not digits:
            continue
        person = None
        if check_persons:
            person = person_of(contacts, p)
            if (litigator_answer if person is None else (person.get("litigator") or person.get("deceased"))):
                blocked.add(digits)
                continue
        if p.get("isDoNotCall") or p.get("isTcpa"):
            blocked.add(digits)
            continue
        if judge:
            if "dncCheckedAt" in p:
                checked = p["dncCheckedAt"]
                if checked is None or checked < fresh_after:
                    stale.add(digits)
                    continue
            elif answer_stale:
                stale.add(digits)
                continue
        candidates.append((p, digits, person))
    if len(candidates) > 1:  # list.sort is stable: provider order breaks ties
        candidates.sort(key=lambda c: phone_rank_key(c[0], c[2]))
    out: list[str] = []
    for _, digits, _ in candidates:
        if digits not in blocked and digits not in stale and digits not in out:
            out.append(digits)
    return out, len(blocked), len(stale - blocked) if blocked else len(stale)


def callable_phones(
    contacts: dict | None, *, checked_at: dt.datetime | None = None, fresh_after: dt.datetime | None = None
) -> tuple[list[str], int]:
    """(callable numbers as 10 digits in dialer order, how many numbers were left out for a flag).

    Left out: DNC or TCPA flagged numbers and the numbers of a litigator or deceased person (see the
    module docstring), and, with ``fresh_after``, numbers whose DNC status is stale (not counted here:
    see :func:`dialable_phones`). A number listed twice counts once; if any of its entries is left
    out, it is.
    """
    numbers, excluded, _ = dialable_phones(contacts, checked_at=checked_at, fresh_after=fresh_after)
    return numbers, excluded


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


Cells = tuple[list[str], str, str]


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def contact_cells(
    contacts: dict | None,
    source: str = "batchdata",
    *,
    checked_at: dt.datetime | None = None,
    fresh_after: dt.datetime | None = None,
    profile: str = "seed",
) -> Cells:
    """The contact part of a row, already safe: (the cells between ``Owner`` and ``Cached``, the
    ``DNC_Excluded`` cell, the ``DNC_Stale`` cell).

    Depends only on the contacts, the DNC time and the cut-off, so callers may compute it once per
    provider call.
    """
    if profile == "wide":
        plan = phone_plan(contacts, checked_at=checked_at, fresh_after=fresh_after)
        excluded = sum(1 for e in plan if e.blocked)
        stale = sum(1 for e in plan if e.flags and not e.blocked)
        emails = (ordered_emails(contacts) + [""] * WIDE_EMAILS)[:WIDE_EMAILS]
        phone_cells: list[str] = []
        for e in plan[:WIDE_PHONES]:
            dnc = "yes" if FLAG_DNC in e.flags else ("stale" if FLAG_STALE in e.flags else "no")
            phone_cells += [e.digits, normalize_type(e.phone.get("type")), dnc, _yes(FLAG_TCPA in e.flags),
                            safe_cell(str((e.person or {}).get("name") or "")), e.flag_text()]
        phone_cells += [""] * (len(WIDE_PHONE_FIELDS) * WIDE_PHONES - len(phone_cells))
        cells = [*phone_cells, *_safe_row(emails), safe_cell(source) if plan else "",
                 safe_cell(source) if emails[0] else ""]
        return cells, str(excluded), str(stale)
    if profile != "seed":
        raise ValueError(f"unknown export profile {profile!r}")
    phones, excluded, stale = dialable_phones(contacts, checked_at=checked_at, fresh_after=fresh_after)
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
    return cells, str(excluded), str(stale)


_EMPTY_CONTACT_CELLS = {
    "seed": [""] * (MAX_PHONES + MAX_EMAILS + 2),
    "wide": [""] * (len(WIDE_PHONE_FIELDS) * WIDE_PHONES + WIDE_EMAILS + 2),
}


def row_from_cells(
    *, lead_id: str, address: str, owner: str, cells: Cells | None, cached: bool, profile: str = "seed"
) -> list[str]:
    """A dialer row from :func:`contact_cells` output (None = no contacts: empty cells, ``0`` counts)."""
    contact, excluded, stale = cells if cells is not None else (_EMPTY_CONTACT_CELLS[profile], "0", "0")
    return [
        safe_cell(lead_id),
        safe_cell(address),
        safe_cell(owner),
        *contact,
        "yes" if cached else "no",
        excluded,
        stale,
    ]


def dialer_row(
    *,
    lead_id: str,
    address: str,
    owner: str,
    contacts: dict | None,
    source: str = "batchdata",
    cached: bool,
    checked_at: dt.datetime | None = None,
    fresh_after: dt.datetime | None = None,
    profile: str = "seed",
) -> list[str]:
    """One dialer CSV row (``HEADERS[profile]`` order). ``contacts=None`` (failed, unmatched) = empty cells."""
    return row_from_cells(
        lead_id=lead_id, address=address, owner=owner, cached=cached, profile=profile,
        cells=contact_cells(contacts, source, checked_at=checked_at, fresh_after=fresh_after, profile=profile),
    )


def _writer(fh: TextIO) -> Any:
    return csv.writer(fh, quoting=csv.QUOTE_ALL, lineterminator="\r\n")


def write_dialer_csv(
    rows: Iterable[list[str]], fh: TextIO, *, _rows_are_safe: bool = False, header: list[str] = DIALER_HEADER
) -> int:
    """Header + rows into ``fh`` (opened with ``encoding="utf-8-sig", newline=""``); returns rows written.

    Cells pass through :func:`safe_cell` again (it is idempotent), so rows built elsewhere are safe
    too; ``_rows_are_safe`` skips that for rows made by :func:`dialer_row` / :func:`row_from_cells`.
    """
    writer = _writer(fh)
    writer.writerow(header)
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


def stream_dialer_csv(rows: Iterable[list[str]], *, header: list[str] = DIALER_HEADER) -> Iterator[str]:
    """The same text as :func:`write_dialer_csv` plus the BOM, in chunks (for a StreamingHttpResponse)."""
    buf = io.StringIO()
    writer = _writer(buf)
    buf.write(BOM)
    writer.writerow(header)
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
