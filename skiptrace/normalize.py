"""Lead normalization and signatures for skip-trace de-duplication.

Every provider call costs money, so two spellings of the same lead must fold to one
``signature`` (and hence one idempotency key, one provider call). The opposite
mistake is worse: if two *different* leads fold together, one owner's phone numbers
are handed to another. So every rule below folds only spellings that USPS itself
treats as the same address, and anything ambiguous is left alone: a missed fold
costs one duplicate call, a false fold costs a wrong contact.

Pure stdlib, no Django: importable from workers, scripts and tests alike.

Signatures (from the Sprint 1 spec)::

    address     = f"{street}|{city}|{state}|{zip}"
    signature   = sha256(address + "#" + person)
    sanitized   = the same with the unit designators and their identifiers removed
    idempotency = sha256(signature)

A normalized street never contains ``|`` or ``#`` and a person never contains ``#``,
so those separators cannot be forged by the data.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from dataclasses import dataclass

from .street_parser import IDENTIFIER_OPTIONAL, UNIT_DESIGNATORS, Street, parse_street  # noqa: F401
from .usps_tables import STATE_CODES, STATE_NAMES

__all__ = [
    "MAX_FIELD_LENGTH",
    "InvalidLead",
    "NormalizedLead",
    "has_unit",
    "idempotency_key",
    "is_entity_name",
    "lead_problem",
    "normalize_city",
    "normalize_lead",
    "normalize_person",
    "normalize_state",
    "normalize_street",
    "normalize_zip",
    "strip_units",
]

#: Longer input is refused rather than truncated: truncation could fold two leads.
MAX_FIELD_LENGTH = 200


class InvalidLead(ValueError):
    """A lead that cannot be sent to the provider; ``reason`` says why, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NormalizedLead:
    street: str
    street_sanitized: str
    city: str
    state: str
    zip: str
    first: str
    last: str
    person: str
    is_entity: bool
    entity_name: str
    has_unit: bool
    address: str
    address_sanitized: str
    signature: str
    sanitized_signature: str


# --------------------------------------------------------------------------------
# Entity owners
# --------------------------------------------------------------------------------

#: Whole words that make an owner name an organisation wherever they appear.
#: Every entry was checked against common US surnames; words that are also
#: surnames live in AMBIGUOUS_ENTITY_WORDS instead.
ENTITY_WORDS: frozenset[str] = frozenset({
    "LLC", "LLP", "LLLP", "PLLC", "LP", "INC", "INCORPORATED", "CORP", "CORPORATION",
    "COMPANY", "LTD", "LIMITED", "FSB", "REIT",
    "TRUST", "TRUSTS", "TRUSTEE", "TRUSTEES", "TTEE", "REVOCABLE", "IRREVOCABLE",
    "ESTATE", "ESTATES",
    "HOLDINGS", "PROPERTIES", "PROPERTY", "INVESTMENTS", "INVESTMENT", "INVESTORS",
    "PARTNERS", "PARTNERSHIP", "ASSOCIATES", "ASSOCIATION", "ASSN", "ASSOC",
    "REALTY", "RENTALS", "CAPITAL", "VENTURES", "ENTERPRISES", "MANAGEMENT", "MGMT",
    "DEVELOPMENT", "EQUITIES", "ACQUISITIONS", "MORTGAGE", "LENDING", "FINANCIAL",
    "SAVINGS", "FUND", "FOUNDATION", "MINISTRIES", "MINISTRY", "CONGREGATION",
    "DIOCESE", "COUNTY", "TOWNSHIP", "BOROUGH", "COMMONWEALTH", "AUTHORITY",
    "HOUSING", "DEPARTMENT", "COMMISSION", "AGENCY", "UNIVERSITY", "HOSPITAL",
    "CONDOMINIUM", "CONDOMINIUMS", "CONDO", "HOA", "HOMEOWNERS", "APARTMENTS",
    "COOPERATIVE", "SOCIETY", "INSTITUTE",
})

#: Markers that are also surnames (Melissa Bank, Charlotte Church): they only make
#: an entity when the field says more than "<given name> <marker>", i.e. when the
#: marker is not the last word or the field has three words or more
#: ("BANK OF AMERICA", "FIRST BAPTIST CHURCH").
AMBIGUOUS_ENTITY_WORDS: frozenset[str] = frozenset({"BANK", "CHURCH"})

#: Short markers that only mean an organisation as the last word after a name
#: ("ACME CO", "JOHN SMITH TR", "MARY JONES EST"); alone they are initials.
ENTITY_TRAILING_WORDS: frozenset[str] = frozenset({"CO", "TR", "TRS", "EST"})

#: Multi-word markers, matched as consecutive words (also across first/last).
ENTITY_PHRASES: tuple[tuple[str, ...], ...] = (
    ("CITY", "OF"), ("TOWN", "OF"), ("VILLAGE", "OF"), ("STATE", "OF"),
    ("COUNTY", "OF"), ("ESTATE", "OF"), ("UNITED", "STATES"), ("CREDIT", "UNION"),
    ("FANNIE", "MAE"), ("FREDDIE", "MAC"),
)

#: "L L C" typed with spaces, after single letters are run together.
_SPACED_ENTITY_WORDS: frozenset[str] = frozenset({"LLC", "LLP", "LLLP", "PLLC"})

# --------------------------------------------------------------------------------
# Text cleaning shared by every field
# --------------------------------------------------------------------------------

#: Letters that NFKD does not decompose, and look-alike punctuation, mapped before
#: the accent fold. Apostrophe look-alikes become "'" so they are deleted like it.
_SPECIAL_FOLDS = str.maketrans({
    "ß": "ss", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o",
    "Ł": "L", "ł": "l", "Đ": "D", "đ": "d", "Ð": "D", "ð": "d", "Þ": "TH", "þ": "th",
    "ı": "i",
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "\u00b4": "'", "`": "'",
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",
    "\u2212": "-",
})

#: "123½" must read as "123 1/2", not as house number 1231/2.
_GLUED_FRACTION = re.compile(r"(\d)([\u00bc-\u00be\u2150-\u215e])")

#: "N.E.", "P.O.", "L.L.C." -> "NE", "PO", "LLC" (a lone "ST." is handled as a space).
_DOTTED_ABBREVIATION = re.compile(r"\b(?:[A-Z]\.)+[A-Z]\b\.?")

_WHITESPACE = re.compile(r"\s+")

# Placeholders protecting the "-", "/" and "." that belong to numbers (house numbers
# "12-14", "123-45", "212.5", fractions "1/2", unit identifiers "3-2") while every other
# punctuation mark becomes a space. Control characters are gone by then, so
# these three cannot clash with input.
_KEEP_HYPHEN = "\x01"
_KEEP_SLASH = "\x02"
_KEEP_PERIOD = "\x03"
_NUMBER_HYPHEN = re.compile(r"(?<=[0-9])-(?=[0-9])")
_NUMBER_SLASH = re.compile(r"(?<=[0-9])/(?=[0-9])")
# "212.5 SUNSET AVE" is house number 212.5 (a half lot), not "212 5 SUNSET AVE".
_NUMBER_PERIOD = re.compile(r"(?<=[0-9])\.(?=[0-9])")
# "123-A" / "APT B-3" are the same as "123A" / "APT B3": a single letter glued to a
# number by a hyphen is joined. Longer words ("WILKES-BARRE") split on a space.
_LETTER_NUMBER_HYPHEN = re.compile(r"(?<=[0-9])-(?=[A-Z]\b)|(?<=\b[A-Z])-(?=[0-9])")
_STREET_PUNCTUATION = re.compile(r"[^\w#\x01\x02\x03]|_")
_PLAIN_PUNCTUATION = re.compile(r"[\W_]+")


def _remove_controls(text: str) -> str:
    """Drop NUL/control/format characters; control *whitespace* becomes a space.

    Spreadsheets and web forms leak NULs, zero-width spaces and BOMs into cells.
    They are removed, not rejected, so that a lead that only differs by one of
    them folds with its clean twin. A tab or newline separates words, so it must
    become a space rather than glue "BAYVIEW\\tTER" into one word.
    """
    if text.isascii() and text.isprintable():  # the common case: nothing to remove
        return text
    out = []
    for ch in text:
        if ch in "\t\n\r\v\f\x1c\x1d\x1e\x1f\x85\u2028\u2029":
            out.append(" ")
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def _fold(text: str) -> str:
    """Unicode-fold to upper-case ASCII where a faithful ASCII form exists.

    Accents are dropped from Latin letters only ("NÚÑEZ" == "NUNEZ"). Letters of
    other scripts are kept as they are rather than deleted: deleting them would
    fold two different non-Latin names into the same (empty or shorter) person.
    """
    if text.isascii():  # ASCII is its own NFKC/NFKD form: only the case changes
        return text.upper()
    text = _GLUED_FRACTION.sub(r"\1 \2", text)
    text = text.translate(_SPECIAL_FOLDS)
    text = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(ch) and out and ord(out[-1]) < 0x250:
            continue  # an accent on a Latin letter
        out.append(ch)
    return unicodedata.normalize("NFC", "".join(out)).upper()


def _clean(text: str | None, *, street: bool = False) -> str:
    """``_clean_text``, memoized for the fields whose values repeat across a list.

    Cities, states, first and last names repeat (and each cleaned name is cleaned again by
    ``is_entity_name``): 12 instead of 18 µs a lead on the benchmark's list, no gain when every
    value is distinct. Streets are nearly all distinct, so they are not cached. A small LRU keeps
    memory flat in the row count.
    """
    return _clean_text(text, street=True) if street else _clean_repeated(text)


@functools.lru_cache(maxsize=4096)
def _clean_repeated(text: str | None) -> str:
    return _clean_text(text)


def _clean_text(text: str | None, *, street: bool = False) -> str:
    """The cleaning every field shares: controls, fold, punctuation, whitespace.

    Apostrophes are deleted ("O'NEIL" -> "ONEIL", "JOHN'S" -> "JOHNS"); dotted
    abbreviations are closed up ("N.E." -> "NE"); any other punctuation separates
    words. For streets, "#" survives as a unit marker and "-" and "/" survive
    inside numbers.
    """
    if not text:
        return ""
    text = _fold(_remove_controls(text))
    text = text.replace("'", "")
    text = _DOTTED_ABBREVIATION.sub(lambda m: m.group(0).replace(".", ""), text)
    if street:
        text = _NUMBER_HYPHEN.sub(_KEEP_HYPHEN, text)
        text = _NUMBER_SLASH.sub(_KEEP_SLASH, text)
        if "." in text:
            text = _NUMBER_PERIOD.sub(_KEEP_PERIOD, text)
        text = _LETTER_NUMBER_HYPHEN.sub("", text)
        text = text.replace("#", " # ")
        text = _STREET_PUNCTUATION.sub(" ", text)
        text = text.replace(_KEEP_HYPHEN, "-").replace(_KEEP_SLASH, "/").replace(_KEEP_PERIOD, ".")
    else:
        text = _PLAIN_PUNCTUATION.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------------
# Street
# --------------------------------------------------------------------------------

_Street = Street  # the parsed street (house number, core, units): skiptrace.street_parser


def _parse_street(street: str | None) -> Street:
    return parse_street(_clean(street, street=True).split())


def normalize_street(street: str) -> str:
    """Canonical USPS-style street line, house number and unit kept.

    "77 Bayview Terrace, #3", "77 bayview ter apt. 3" and "77 Bayview Ter # 3" all
    give "77 BAYVIEW TER APT 3". The parts are found wherever they sit, so a city or a
    bare unit id after the suffix does not stop it ("12 Troon Circle Austell" and
    "12 Troon Cir Austell" give "12 TROON CIR AUSTELL"); see skiptrace.street_parser
    for the rules. The function is idempotent, so a normalized street can be fed back
    in (strip_units relies on that).
    """
    return _parse_street(street).render()


def strip_units(normalized_street: str) -> str:
    """The street without any unit designator or identifier (the sanitized retry).

    Accepts raw input too; it is normalized first, which is a no-op on a
    normalized street.
    """
    return _parse_street(normalized_street).render(with_units=False)


def has_unit(street: str) -> bool:
    """Whether the street carries a unit marker (APT, #, STE, FL, REAR, ...)."""
    return bool(_parse_street(street).units)


# --------------------------------------------------------------------------------
# City, state, ZIP
# --------------------------------------------------------------------------------

_ZIP_PLAIN = re.compile(r"^(\d{3,5})(?:\.0+)?$")  # "2134", "33610", Excel's "33610.0"
_ZIP_NINE = re.compile(r"^(\d{5})\d{4}$")
_ZIP_PLUS4 = re.compile(r"^(\d{3,5})\s*-\s*\d{4}$|^(\d{5}) \d{4}$")

_STATE_PREFIXES = {"N": "NORTH", "NO": "NORTH", "S": "SOUTH", "SO": "SOUTH", "W": "WEST"}


def normalize_city(city: str | None) -> str:
    """Upper-case, accents folded, punctuation stripped, whitespace collapsed."""
    return _clean(city)


def normalize_zip(zip: str | None) -> str:  # noqa: A002 - the field is called zip
    """Five-digit ZIP, or "" when none was given.

    Accepts ZIP+4 with a hyphen or space, nine bare digits, and the 3-4 digit
    ZIPs that spreadsheets make by dropping leading zeros ("2134" -> "02134").
    Eight bare digits are refused: a zero-dropped ZIP+4 and a mistyped nine-digit
    ZIP look the same, and guessing would send a wrong ZIP.
    """
    raw = _WHITESPACE.sub(" ", _remove_controls(zip or "")).strip()
    if not raw:
        return ""
    for pattern in (_ZIP_PLAIN, _ZIP_NINE, _ZIP_PLUS4):
        match = pattern.match(raw)
        if match:
            five = next(g for g in match.groups() if g).zfill(5)
            if five != "00000":
                return five
    raise InvalidLead(f"bad zip '{raw}'")


def normalize_state(state: str | None) -> str:
    """Two-letter USPS code from a code or a name, "" when none was given."""
    raw = _WHITESPACE.sub(" ", _remove_controls(state or "")).strip()
    if not raw:
        return ""
    key = _clean(raw)
    if key in STATE_CODES:
        return key
    if key in STATE_NAMES:
        return STATE_NAMES[key]
    words = key.split(" ")
    if len(words) > 1 and words[0] in _STATE_PREFIXES:  # "N CAROLINA", "W VIRGINIA"
        expanded = " ".join([_STATE_PREFIXES[words[0]], *words[1:]])
        if expanded in STATE_NAMES:
            return STATE_NAMES[expanded]
    raise InvalidLead(f"unknown state '{raw}'")


# --------------------------------------------------------------------------------
# Person / entity
# --------------------------------------------------------------------------------


def normalize_person(first: str | None, last: str | None) -> tuple[str, str]:
    """Cleaned (first, last): upper-case, accents folded, punctuation stripped.

    Only spelling is folded. Generational suffixes and initials stay ("SMITH JR" is
    not "SMITH"), since a father and son at one address are two people.
    """
    return _clean(first), _clean(last)


def _run_single_letters(words: list[str]) -> list[str]:
    """["L", "L", "C"] -> ["LLC"]: join runs of single letters into one word."""
    out: list[str] = []
    run = ""
    for word in words:
        if len(word) == 1:
            run += word
            continue
        if run:
            out.append(run)
            run = ""
        out.append(word)
    if run:
        out.append(run)
    return out


def _has_entity_phrase(words: list[str]) -> bool:
    if not _PHRASE_FIRST_WORDS.intersection(words):  # the common case: a person's name, no phrase can start
        return False
    for phrase in ENTITY_PHRASES:
        n = len(phrase)
        if any(tuple(words[i:i + n]) == phrase for i in range(len(words) - n + 1)):
            return True
    return False


_PHRASE_FIRST_WORDS = frozenset(phrase[0] for phrase in ENTITY_PHRASES)


@functools.lru_cache(maxsize=4096)
def is_entity_name(name: str | None) -> bool:
    """Whether one owner-name field names an organisation rather than a person.

    Markers must be whole words ("TRUSTY", "CORPUZ", "BANCROFT" and "ESTATIA" are
    people); CO/TR/TRS/EST only count as the last of two or more words; BANK and
    CHURCH, which are surnames too, need more context (see
    AMBIGUOUS_ENTITY_WORDS).
    """
    words = _clean(name).split()
    if not words:
        return False
    if any(word in ENTITY_WORDS for word in words):
        return True
    if any(word in _SPACED_ENTITY_WORDS for word in _run_single_letters(words)):
        return True
    if len(words) >= 2 and words[-1] in ENTITY_TRAILING_WORDS:
        return True
    for i, word in enumerate(words):
        if word in AMBIGUOUS_ENTITY_WORDS and (i < len(words) - 1 or len(words) >= 3):
            return True
    return _has_entity_phrase(words)


# --------------------------------------------------------------------------------
# Lead
# --------------------------------------------------------------------------------

_FIELDS = ("first_name", "last_name", "street", "city", "state", "zip")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_lead(
    *,
    first_name: str | None,
    last_name: str | None,
    street: str | None,
    city: str | None,
    state: str | None,
    zip: str | None,  # noqa: A002 - the field is called zip everywhere
) -> NormalizedLead:
    """Normalize one lead and compute its signatures; raise InvalidLead if unusable.

    Checks run in this order, so the reason names the first problem: a value that
    is not text, a field over MAX_FIELD_LENGTH, a missing street, a bad ZIP, an
    unknown state, then "needs zip or city and state". A street without a house
    number is accepted (rural routes, PO boxes). Entity owners are kept as
    ``entity_name`` and left out of ``person``: their name is not sent to the
    provider, so two entities at one address are the same provider request.
    """
    values = dict(zip=zip, first_name=first_name, last_name=last_name,
                  street=street, city=city, state=state)
    cleaned: dict[str, str] = {}
    for field in _FIELDS:
        value = values[field]
        if value is not None and not isinstance(value, str):
            raise InvalidLead(f"{field} must be text")
        value = _remove_controls(value or "").strip()
        if len(value) > MAX_FIELD_LENGTH:
            raise InvalidLead(f"field too long: {field}")
        cleaned[field] = value

    parsed = _parse_street(cleaned["street"])
    norm_street = parsed.render()
    if not norm_street:
        raise InvalidLead("missing street")
    norm_zip = normalize_zip(cleaned["zip"])
    norm_state = normalize_state(cleaned["state"])
    norm_city = normalize_city(cleaned["city"])
    if not norm_zip and not (norm_city and norm_state):
        raise InvalidLead("needs zip or city and state")

    first, last = normalize_person(cleaned["first_name"], cleaned["last_name"])
    entity = (
        is_entity_name(first)
        or is_entity_name(last)
        or _has_entity_phrase(f"{first} {last}".split())
    )
    person = "" if entity else f"{first} {last}".strip()
    entity_name = f"{first} {last}".strip() if entity else ""
    if entity:
        first = last = ""

    sanitized_street = parsed.render(with_units=False)
    address = f"{norm_street}|{norm_city}|{norm_state}|{norm_zip}"
    address_sanitized = f"{sanitized_street}|{norm_city}|{norm_state}|{norm_zip}"
    return NormalizedLead(
        street=norm_street,
        street_sanitized=sanitized_street,
        city=norm_city,
        state=norm_state,
        zip=norm_zip,
        first=first,
        last=last,
        person=person,
        is_entity=entity,
        entity_name=entity_name,
        has_unit=bool(parsed.units),
        address=address,
        address_sanitized=address_sanitized,
        signature=_sha256(f"{address}#{person}"),
        sanitized_signature=_sha256(f"{address_sanitized}#{person}"),
    )


def lead_problem(
    *,
    first_name: str | None = None,
    last_name: str | None = None,
    street: str | None = None,
    city: str | None = None,
    state: str | None = None,
    zip: str | None = None,  # noqa: A002
) -> str | None:
    """None when normalize_lead() would accept the lead, else its short reason."""
    try:
        normalize_lead(first_name=first_name, last_name=last_name, street=street,
                       city=city, state=state, zip=zip)
    except InvalidLead as exc:
        return exc.reason
    return None


def idempotency_key(signature: str, generation: int = 0) -> str:
    """Provider idempotency key for a signature.

    Generation 0 is exactly the spec's ``sha256(signature)``. A deliberate
    re-fetch (``force``, or an explicit resume of a call whose answer was lost)
    bumps the generation, which yields a new key without touching the signature
    that the cache and de-duplication are keyed on.
    """
    if isinstance(generation, bool) or not isinstance(generation, int) or generation < 0:
        raise ValueError("generation must be a non-negative integer")
    if generation == 0:
        return _sha256(signature)
    return _sha256(f"{signature}:{generation}")
