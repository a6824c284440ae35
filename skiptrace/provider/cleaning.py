"""Cleaning what the provider returns: phone numbers to E.164, types, flags, ranks, confidence; emails;
merging one lead's phones and emails across its persons.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

from skiptrace.provider.model import (
    PHONE_LAND_LINE,
    PHONE_MOBILE,
    PHONE_UNKNOWN,
    PHONE_VOIP,
    Email,
    Phone,
    unreadable,
)

logger = logging.getLogger("convexa.provider")


_TRUE_STRINGS = frozenset({"true", "t", "yes", "y", "1"})
_FALSE_STRINGS = frozenset({"false", "f", "no", "n", "0", ""})


def read_flag(value: Any) -> bool:
    """A provider boolean. Absent is False; an unrecognised value counts as True, because every
    flag we read (dnc, tcpa, litigator) restricts dialing: ambiguity must not unlock a call."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _FALSE_STRINGS:
            return False
        return True
    if isinstance(value, dict | list):
        return any(read_flag(v) for v in (value.values() if isinstance(value, dict) else value))
    return True


def confidence(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or value != value:  # NaN
        return None
    if value in (float("inf"), float("-inf")):
        return 100 if value > 0 else 0
    return max(0, min(100, int(round(value))))



def phone_type(value: Any) -> str:
    key = re.sub(r"[^a-z]", "", str(value or "").lower())
    if key in ("mobile", "cell", "cellular", "wireless", "mobilephone", "cellphone"):
        return PHONE_MOBILE
    if key in ("landline", "land", "fixedline", "wireline"):
        return PHONE_LAND_LINE
    if key in ("voip", "voiceoverip", "internet", "nonfixedvoip", "fixedvoip"):
        return PHONE_VOIP
    return PHONE_UNKNOWN  # toll-free, pager, absent...


def to_e164(number: Any) -> str | None:
    """US/NANP number as "+1XXXXXXXXXX", or None when it is not one."""
    if number is None or isinstance(number, bool):
        return None
    digits = re.sub(r"\D", "", str(number))
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10:
        return None
    if digits[0] in "01" or digits[3] in "01":  # NANP: area code and exchange start with 2-9
        return None
    return "+1" + digits


def opt_bool(value: Any) -> bool | None:
    """A descriptive provider boolean (tested, reachable): None when absent or not readable."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    return None


def opt_rank(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value or abs(value) == float("inf"):
        return None
    return int(value)


def ranked(items: list, by_rank: bool) -> list:
    """V3: order by ``rank`` (1 = best; unranked last, provider order otherwise)."""
    if not by_rank:
        return list(items)
    def key(item: Any) -> tuple[bool, int]:
        rank = opt_rank(item.get("rank")) if isinstance(item, dict) else None
        return (rank is None, rank or 0)
    return sorted(items, key=key)


def parse_phones(where: str, items: list, *, person: int | None = None, by_rank: bool = False) -> list[Phone]:
    out: list[Phone] = []
    for j, item in enumerate(ranked(items, by_rank)):
        if isinstance(item, str | int) and not isinstance(item, bool):
            item = {"number": item}
        if not isinstance(item, dict):
            raise unreadable(f"{where}[{j}] is {type(item).__name__}, not an object")
        number = to_e164(item.get("number"))
        if number is None:
            logger.debug("batchdata %s[%d] skipped: not a NANP number", where, j)
            continue
        carrier = item.get("carrier")
        out.append(Phone(
            number=number,
            type=phone_type(item.get("type")),
            is_dnc=read_flag(item.get("dnc")),
            is_tcpa=read_flag(item.get("tcpa")),
            confidence=confidence(item.get("score")),
            rank=opt_rank(item.get("rank")),
            carrier=carrier.strip() or None if isinstance(carrier, str) else None,
            tested=opt_bool(item.get("tested")),
            reachable=opt_bool(item.get("reachable")),
            person=person,
        ))
    return out


def merge_phones(phones: list[Phone], barred: frozenset[int] = frozenset()) -> tuple[Phone, ...]:
    """Same number twice (one person or two): keep the first (owners first, then rank), but any
    DNC/TCPA flag wins. A number that is also a litigator's or a deceased person's (``barred``
    person indexes) keeps that entry too, so the dialer sees it and never calls the number."""
    out: list[Phone] = []
    index: dict[str, int] = {}
    for phone in phones:
        k = index.get(phone.number)
        if k is None:
            index[phone.number] = len(out)
            out.append(phone)
            continue
        prev = out[k]
        if phone.person in barred and not any(p.number == phone.number and p.person in barred for p in out):
            out.append(phone)
        out[k] = dataclasses.replace(prev, is_dnc=prev.is_dnc or phone.is_dnc, is_tcpa=prev.is_tcpa or phone.is_tcpa)
    return tuple(out)


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def parse_emails(where: str, items: list, *, person: int | None = None, by_rank: bool = False) -> list[Email]:
    out: list[Email] = []
    for j, item in enumerate(ranked(items, by_rank)):
        if isinstance(item, str):
            item = {"email": item}
        if not isinstance(item, dict):
            raise unreadable(f"{where}[{j}] is {type(item).__name__}, not an object")
        value = item.get("email")
        if not isinstance(value, str) or not value.strip():
            value = item.get("address")
        if not isinstance(value, str):
            continue
        address = value.strip().lower()
        if not _EMAIL_RE.match(address):
            continue
        out.append(Email(address=address, is_primary=False, confidence=confidence(item.get("score")),
                         rank=opt_rank(item.get("rank")),
                         tested=opt_bool(item.get("tested")), person=person))
    return out


def merge_emails(emails: list[Email]) -> tuple[Email, ...]:
    """Without repeats; the lead's first address is its primary one."""
    out: list[Email] = []
    seen: set[str] = set()
    for e in emails:
        if e.address in seen:
            continue
        seen.add(e.address)
        out.append(dataclasses.replace(e, is_primary=not out))
    return tuple(out)
