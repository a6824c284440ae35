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

from .usps_tables import DIRECTIONALS, STATE_CODES, STATE_NAMES, STREET_SUFFIXES

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
# Unit designators (Publication 28, Appendix C2)
# --------------------------------------------------------------------------------

#: Spelling -> canonical designator. The generic "a dwelling inside the building"
#: designators all fold to APT, because lead lists use them interchangeably for the
#: same door ("Apt 3", "#3", "Unit 3", "Ste 3"). Floor, building and the rest name
#: something else and stay distinct, so "FL 3" never folds with "APT 3".
UNIT_DESIGNATORS: dict[str, str] = {
    "#": "APT",
    "APT": "APT", "APARTMENT": "APT",
    "UNIT": "APT",
    "STE": "APT", "SUITE": "APT",
    "RM": "APT", "ROOM": "APT",
    "SPC": "APT", "SPACE": "APT",
    "LOT": "APT",
    "TRLR": "APT", "TRLRS": "APT", "TRAILER": "APT",
    "FL": "FL", "FLOOR": "FL", "FLR": "FL",
    "BLDG": "BLDG", "BUILDING": "BLDG",
    "DEPT": "DEPT", "DEPARTMENT": "DEPT",
    "PH": "PH", "PENTHOUSE": "PH",
    "OFC": "OFC", "OFFICE": "OFC",
    "BSMT": "BSMT", "BASEMENT": "BSMT",
    "FRNT": "FRNT", "FRONT": "FRNT",
    "LBBY": "LBBY", "LOBBY": "LBBY",
    "LOWR": "LOWR", "LOWER": "LOWR",
    "UPPR": "UPPR", "UPPER": "UPPR",
    "REAR": "REAR",
    "SIDE": "SIDE",
}

#: Canonical designators that C2 allows without an identifier ("123 MAIN ST REAR").
#: Because words like FRONT or UPPER are also street names, these are only taken as
#: a unit when they follow a complete street (a suffix) -- see _unit_at().
IDENTIFIER_OPTIONAL: frozenset[str] = frozenset(
    {"PH", "OFC", "BSMT", "FRNT", "LBBY", "LOWR", "UPPR", "REAR", "SIDE"}
)

#: Noise between a designator and its identifier: "APT NO 3", "UNIT NUMBER 3".
_NUMBER_WORDS: frozenset[str] = frozenset({"NO", "NUM", "NUMBER", "NBR"})

_FLOOR_WORDS: frozenset[str] = frozenset({"FL", "FLOOR", "FLR"})

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

# Placeholders protecting the "-" and "/" that belong to numbers (house numbers
# "12-14", "123-45", fractions "1/2", unit identifiers "3-2") while every other
# punctuation mark becomes a space. Control characters are gone by then, so
# these two cannot clash with input.
_KEEP_HYPHEN = "\x01"
_KEEP_SLASH = "\x02"
_NUMBER_HYPHEN = re.compile(r"(?<=[0-9])-(?=[0-9])")
_NUMBER_SLASH = re.compile(r"(?<=[0-9])/(?=[0-9])")
# "123-A" / "APT B-3" are the same as "123A" / "APT B3": a single letter glued to a
# number by a hyphen is joined. Longer words ("WILKES-BARRE") split on a space.
_LETTER_NUMBER_HYPHEN = re.compile(r"(?<=[0-9])-(?=[A-Z]\b)|(?<=\b[A-Z])-(?=[0-9])")
_STREET_PUNCTUATION = re.compile(r"[^\w#\x01\x02]|_")
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
        text = _LETTER_NUMBER_HYPHEN.sub("", text)
        text = text.replace("#", " # ")
        text = _STREET_PUNCTUATION.sub(" ", text)
        text = text.replace(_KEEP_HYPHEN, "-").replace(_KEEP_SLASH, "/")
    else:
        text = _PLAIN_PUNCTUATION.sub(" ", text)
    return _WHITESPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------------
# Street
# --------------------------------------------------------------------------------

_HOUSE_NUMBER = re.compile(r"^\d")
_FRACTION = re.compile(r"^\d+/\d+$")
_ORDINAL = re.compile(r"^(\d+)(?:ST|ND|RD|TH)$")
# "APT3", "STE210", "FLOOR2", "UNIT5B": a designator glued to a numeric identifier.
# (Glued letters, "APTB", are left alone: "RMZ" or "PHX" could be anything.)
_GLUED_UNIT = re.compile(
    r"^(" + "|".join(sorted((d for d in UNIT_DESIGNATORS if d != "#"), key=len, reverse=True))
    + r")(\d[0-9A-Z]*)$"
)


@dataclass(frozen=True)
class _Street:
    """A street split into its USPS parts; ``units`` are (designator, identifier)."""

    house: list[str]
    core: list[str]
    units: list[tuple[str, str]]

    def render(self, *, with_units: bool = True) -> str:
        parts = self.house + self.core
        if with_units:
            for designator, identifier in self.units:
                parts.append(designator)
                if identifier:
                    parts.append(identifier)
        return " ".join(parts)


def _is_identifier(token: str) -> bool:
    """Whether ``token`` can be the identifier after a unit designator.

    Numbers ("3", "5B", "210", "3-2"), single letters and directionals ("APT E",
    "UNIT NORTH", read as "APT E" / "APT N") can. Other short words can unless they
    are a street suffix: that keeps "123 OLD LOT RD" a street rather than
    "123 OLD" + "unit RD". Directionals are accepted in every spelling because the
    street may already have been normalized ("SPACE NORTH" -> "SPACE N"), and both
    must read the same way for normalization to be idempotent.
    """
    if token in UNIT_DESIGNATORS or token in _NUMBER_WORDS:
        return False
    if any(ch.isdigit() for ch in token) or token in DIRECTIONALS:
        return True
    if len(token) == 1:
        return token.isalpha()
    return len(token) <= 3 and token.isalpha() and token not in STREET_SUFFIXES


def _unit_at(tokens: list[str], i: int, *, started: bool) -> tuple[str, str, int] | None:
    """Read a unit segment starting at ``tokens[i]``.

    Returns (canonical designator, identifier, index after the segment) or None.
    Before the unit part of the street has started (``started`` False), the
    identifier-less designators (REAR, FRONT, ...) are only accepted right after a
    street suffix (optionally + directional), because they are street names too.
    """
    token = tokens[i]
    designator = UNIT_DESIGNATORS.get(token)
    if designator is None:
        return None
    j = i + 1
    # TRLR/TRAILER are street suffixes too: only a unit when the identifier follows
    # at once and is not a directional ("SHADY TRLR NE", "OAK TRLR # 9" keep the suffix).
    dual = token in STREET_SUFFIXES
    if dual and (j >= len(tokens) or tokens[j] in DIRECTIONALS):
        return None
    while not dual and j < len(tokens):  # skip the noise before the identifier
        if tokens[j] == "#" and token != "#":  # "APT # 3"
            j += 1
        elif tokens[j] in _NUMBER_WORDS and j + 1 < len(tokens):  # "APT NO 3"
            j += 1
        else:
            break
    if j < len(tokens) and _is_identifier(tokens[j]):
        identifier = DIRECTIONALS.get(tokens[j], tokens[j])
        if designator == "FL":
            ordinal = _ORDINAL.match(identifier)
            if ordinal:
                identifier = ordinal.group(1)  # "FL 2ND" == "FL 2"
        return designator, identifier, j + 1
    if designator in IDENTIFIER_OPTIONAL:
        if started:
            return designator, "", i + 1
        k = i - 1
        while k >= 1 and i - k <= 2 and tokens[k] in DIRECTIONALS:
            k -= 1  # "MAIN ST N REAR", "MAIN ST N E REAR"
        if k >= 0 and tokens[k] in STREET_SUFFIXES:
            return designator, "", i + 1
    return None


def _drop_stray_hashes(tokens: list[str]) -> list[str]:
    """Keep a "#" only where it marks a unit: after a street name, before an identifier.

    Done before the unit scan so that a dangling "#" ("MAIN ST #", "# APT 3") cannot
    change how the words around it are read, which keeps normalization idempotent.
    """
    kept: list[str] = []
    for i, token in enumerate(tokens):
        if token == "#" and not (
            kept and i + 1 < len(tokens) and _is_identifier(tokens[i + 1])
        ):
            continue
        kept.append(token)
    return kept


def _split_units(rest: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split the tokens after the house number into street core and unit segments.

    The unit part starts at the first designator that has a street name before it
    ("1601 SPACE CENTER BLVD" is not unit CENTER) and a plausible identifier.
    From there on, a token that is not a new designator belongs to the current
    identifier ("APT 3 B"), so nothing after the unit leaks into the street.
    """
    start = None
    for i in range(1, len(rest)):
        if _unit_at(rest, i, started=False):
            start = i
            break
    if start is None:
        return rest, []
    core, units = rest[:start], []
    j = start
    while j < len(rest):
        segment = _unit_at(rest, j, started=True)
        if segment:
            designator, identifier, j = segment
            units.append((designator, identifier))
        else:
            designator, identifier = units[-1]
            joined = f"{identifier} {rest[j]}".strip()
            units[-1] = (designator, joined)
            j += 1
    return core, units


_NORTH_SOUTH = {"N": "N", "NORTH": "N", "S": "S", "SOUTH": "S"}
_EAST_WEST = {"E": "E", "EAST": "E", "W": "W", "WEST": "W"}


def _join_split_directionals(core: list[str]) -> list[str]:
    """ "N E" (typed "N. E.") -> "NE", but only where it cannot be a street name.

    After a suffix ("PEACHTREE ST N E") or before at least two more words
    ("N E 5TH AVE"). "123 S E ST" keeps E as the street name.
    """
    name = list(core)
    if (
        len(name) >= 3
        and name[-2] in _NORTH_SOUTH
        and name[-1] in _EAST_WEST
        and name[-3] in STREET_SUFFIXES
    ):
        name[-2:] = [_NORTH_SOUTH[name[-2]] + _EAST_WEST[name[-1]]]
    if len(name) >= 4 and name[0] in _NORTH_SOUTH and name[1] in _EAST_WEST:
        name[:2] = [_NORTH_SOUTH[name[0]] + _EAST_WEST[name[1]]]
    return name


def _canonical_core(core: list[str]) -> list[str]:
    """Canonicalize directionals and the suffix, but only in their own positions.

    Each of post-directional, suffix and pre-directional is taken only if a street
    name is left after taking it, so "123 N ST" stays the N street (not "North,
    street name ST") and "123 NORTH ST" stays North Street: the two are different
    streets in cities with lettered streets and must not fold.
    """
    name = _join_split_directionals(core)
    pre = suffix = post = None
    if len(name) >= 2 and name[-1] in DIRECTIONALS:
        post = DIRECTIONALS[name.pop()]
    if len(name) >= 2 and name[-1] in STREET_SUFFIXES:
        suffix = STREET_SUFFIXES[name.pop()]
    if len(name) >= 2 and name[0] in DIRECTIONALS:
        pre = DIRECTIONALS[name.pop(0)]
    if suffix is None and name:
        # The street type *is* the name: "AVENUE N", "AVENUE B", "HIGHWAY 101",
        # "COUNTY ROAD 5", "ROUTE 9". Fold its spelling too.
        if len(name) == 1 and name[0] in STREET_SUFFIXES:
            name[0] = STREET_SUFFIXES[name[0]]
        elif (
            len(name) >= 2
            and name[-2] in STREET_SUFFIXES
            and (name[-1].isdigit() or (len(name[-1]) == 1 and name[-1].isalpha()))
        ):
            name[-2] = STREET_SUFFIXES[name[-2]]
    return [p for p in (pre, *name, suffix, post) if p]


def _parse_street(street: str | None) -> _Street:
    tokens = _clean(street, street=True).split()
    # A leading "#" is not a unit ("#123 MAIN ST") unless a house number follows
    # its identifier ("#3 77 BAYVIEW TER", moved to the end just below).
    while tokens and tokens[0] == "#" and not (
        len(tokens) >= 4 and _is_identifier(tokens[1]) and _HOUSE_NUMBER.match(tokens[2])
    ):
        tokens.pop(0)
    # "APT 3, 77 BAYVIEW TER" -> "77 BAYVIEW TER APT 3".
    if (
        len(tokens) >= 4
        and tokens[0] in UNIT_DESIGNATORS
        and _is_identifier(tokens[1])
        and _HOUSE_NUMBER.match(tokens[2])
    ):
        tokens = tokens[2:] + tokens[:2]
    house: list[str] = []
    if tokens and _HOUSE_NUMBER.match(tokens[0]):
        house.append(tokens.pop(0))
        while tokens and tokens[0] == "#":
            tokens.pop(0)  # "123 # 1/2 ...": no street name yet, so not a unit
        if tokens and _FRACTION.match(tokens[0]):
            house.append(tokens.pop(0))  # "123 1/2 MAIN ST"
    rest: list[str] = []
    for i, token in enumerate(tokens):
        glued = _GLUED_UNIT.match(token) if i >= 1 else None
        if glued:
            rest.extend(glued.groups())
        else:
            rest.append(token)
    rest = _drop_stray_hashes(rest)
    # "2ND FL" / "3RD FLOOR" -> "FL 2" / "FL 3" when it ends the street or a unit follows.
    for i in reversed(range(1, len(rest) - 1)):  # right to left: "2ND FL 3RD FL"
        ordinal = _ORDINAL.match(rest[i])
        if ordinal and rest[i + 1] in _FLOOR_WORDS and (
            i + 2 == len(rest) or rest[i + 2] in UNIT_DESIGNATORS
        ):
            rest[i], rest[i + 1] = "FL", ordinal.group(1)
    core, units = _split_units(_drop_stray_hashes(rest))  # again: "# 2ND FL" -> "# FL 2"
    return _Street(house=house, core=_canonical_core(core), units=units)


def normalize_street(street: str) -> str:
    """Canonical USPS-style street line, house number and unit kept.

    "77 Bayview Terrace, #3", "77 bayview ter apt. 3" and "77 Bayview Ter # 3" all
    give "77 BAYVIEW TER APT 3". The function is idempotent, so a normalized street
    can be fed back in (strip_units relies on that).
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
