"""The street-line parser behind :func:`skiptrace.normalize.normalize_street`.

Finds the USPS Publication 28 parts of a cleaned street line wherever they sit -- house number
(with a fraction or a letter), pre-directional, street name, suffix, post-directional, the unit
designators and their identifiers, and whatever trails the street (a city left in the field, a
unit identifier without a designator) -- and renders them in Publication 28 form.

Two rules keep the result the same for every spelling of one street and different for two
streets:

* Roles are decided on what a word *is* (a suffix, a directional, a unit designator, in any of
  its spellings), never on how it is spelled, so "CIRCLE" and "CIR" get the same role in the
  same line.
* Every part is rendered from its role and its meaning: the suffix, the directionals and the
  unit designators in their standard abbreviation; name words as typed, except that a suffix
  abbreviation inside a name is spelled out ("AVALON RDG PKWY" == "AVALON RIDGE PKWY",
  "AVE OF THE AMERICAS" == "AVENUE OF THE AMERICAS") and a directional inside a name is
  abbreviated ("OTTER CREEK SOUTH RD" == "OTTER CREEK S RD"). Nothing is dropped, so a line
  can only fold with a line that has the same words in other spellings.

The one deliberate exception to both: a directional that is, or starts, the street name is
kept as typed, because "123 N ST" (the lettered N Street) and "123 NORTH ST" are two streets.
A directional before a lone suffix word is read the USPS way: after a thoroughfare type
("ST", "AVE", "RD", ... see usps_tables.THOROUGHFARE_TYPES) it is the name, as above; after
any other suffix word it is a pre-directional and the word is the name, so "1520 N WELLS" is
what every spelling of "1520 North Wells" gives.

The suffix is the last suffix word that has a name before it; what follows it and its
post-directional is the tail ("12 TROON CIR AUSTELL", "801 S CANAL ST C1S"), kept as typed
but for its directionals. A city with a suffix word in it ("... RD LAKE FOREST") then holds
the last suffix word, and the real suffix is read as part of the name: spelled out the same
way for every spelling, so the line still folds.

Why hand-written rules and not a parsing library: a CRF parser such as ``usaddress`` labels
each line on its own, so two spellings of one street can get different parts -- measured with
usaddress 0.5.16, "12 Troon Circle Austell" tags Austell as a street type but "12 Troon Cir
Austell" as a city, and "21 Dearborn Second Fl" tags "Second Fl" as city and state -- and
those would fold to different signatures. Its labels also move with the model version, and
it costs about 90 µs a line just to tag, against about 15 µs for the whole of
normalize_street here on the same machine: some 9 s more for the 100,000-row intake, whose
budget is 10 s. The rules here are deterministic look-ups in the Publication 28 tables, so
the same words always get the same parts, and the real-address test
(tests/unit/test_normalize_real.py) measures them on real lines.

Pure stdlib, no Django. The input is the token list of ``normalize._clean_text(street=True)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .usps_tables import (
    DIRECTIONALS,
    NAME_SPELLINGS,
    ROUTE_TYPES,
    STREET_SUFFIXES,
    THOROUGHFARE_TYPES,
)

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
    "BLDG": "BLDG", "BUILDING": "BLDG", "BLD": "BLDG",
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
_ID_NOISE: frozenset[str] = frozenset({"NO", "NUM", "NUMBER", "NBR"})

_FLOOR_WORDS: frozenset[str] = frozenset({"FL", "FLOOR", "FLR"})

#: Spelled-out floors: "SECOND FLOOR" == "2ND FL" == "FL 2".
ORDINAL_WORDS: dict[str, str] = {
    "FIRST": "1", "SECOND": "2", "THIRD": "3", "FOURTH": "4", "FIFTH": "5", "SIXTH": "6",
    "SEVENTH": "7", "EIGHTH": "8", "NINTH": "9", "TENTH": "10", "ELEVENTH": "11",
    "TWELFTH": "12", "THIRTEENTH": "13", "FOURTEENTH": "14", "FIFTEENTH": "15",
    "SIXTEENTH": "16", "SEVENTEENTH": "17", "EIGHTEENTH": "18", "NINETEENTH": "19",
    "TWENTIETH": "20",
}

#: House numbers written as words ("FIFTY N FRONT ST", "ONE S WACKER DR").
HOUSE_NUMBER_WORDS: frozenset[str] = frozenset({
    "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "TEN", "ELEVEN",
    "TWELVE", "THIRTEEN", "FOURTEEN", "FIFTEEN", "SIXTEEN", "SEVENTEEN", "EIGHTEEN", "NINETEEN",
    "TWENTY", "THIRTY", "FORTY", "FIFTY", "SIXTY", "SEVENTY", "EIGHTY", "NINETY", "HUNDRED",
})

_FRACTION = re.compile(r"^\d+/\d+$")
_ORDINAL = re.compile(r"^(\d+)(?:ST|ND|RD|TH)$")
# "APT3", "STE210", "FLOOR2", "UNIT5B": a designator glued to a numeric identifier.
# (Glued letters, "APTB", are left alone: "RMZ" or "PHX" could be anything.)
_GLUED_UNIT = re.compile(
    r"^(" + "|".join(sorted((d for d in UNIT_DESIGNATORS if d != "#"), key=len, reverse=True))
    + r")(\d[0-9A-Z]*)$"
)

_NORTH_SOUTH = {"N": "N", "NORTH": "N", "S": "S", "SOUTH": "S"}
_EAST_WEST = {"E": "E", "EAST": "E", "W": "W", "WEST": "W"}


@dataclass(frozen=True)
class Street:
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


# --------------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------------


def is_identifier(token: str) -> bool:
    """Whether ``token`` can be the identifier after a unit designator.

    Numbers ("3", "5B", "210", "3-2"), single letters and directionals ("APT E",
    "UNIT NORTH", read as "APT E" / "APT N") can. Other short words can unless they
    are a street suffix: that keeps "123 OLD LOT RD" a street rather than
    "123 OLD" + "unit RD". Directionals are accepted in every spelling because the
    street may already have been normalized ("SPACE NORTH" -> "SPACE N"), and both
    must read the same way for normalization to be idempotent.
    """
    if token in UNIT_DESIGNATORS or token in _ID_NOISE:
        return False
    if any(ch.isdigit() for ch in token) or token in DIRECTIONALS:
        return True
    if len(token) == 1:
        return token.isalpha()
    return len(token) <= 3 and token.isalpha() and token not in STREET_SUFFIXES


def _after_street(tokens: list[str], i: int) -> bool:
    """Whether ``tokens[i]`` follows a complete street: a suffix, maybe + directionals."""
    k = i - 1
    while k >= 1 and i - k <= 2 and tokens[k] in DIRECTIONALS:
        k -= 1  # "MAIN ST N REAR", "MAIN ST N E REAR"
    return k >= 0 and tokens[k] in STREET_SUFFIXES


def _unit_at(tokens: list[str], i: int, *, started: bool) -> tuple[str, str, int] | None:
    """Read a unit segment starting at ``tokens[i]``.

    Returns (canonical designator, identifier, index after the segment) or None.
    Before the unit part of the street has started (``started`` False), a designator
    without an identifier is only a unit where it cannot be a street name: right after a
    complete street ("123 MAIN ST REAR", "718 DORCHESTER PL NE UNIT"), directly before
    another unit ("APT 3RD FL"), or a last FLOOR one word after the suffix ("AVE GROUND
    FLOOR"). ("MAIN ST FL" may be Florida: read as a floor, it only leaves the sanitized
    street, and the line renders the same either way.)
    """
    token = tokens[i]
    designator = UNIT_DESIGNATORS.get(token)
    if designator is None:
        return None
    n = len(tokens)
    j = i + 1
    # TRLR/TRAILER are street suffixes too: only a unit when the identifier follows
    # at once and is not a directional ("SHADY TRLR NE", "OAK TRLR # 9" keep the suffix).
    dual = token in STREET_SUFFIXES
    if dual and (j >= n or tokens[j] in DIRECTIONALS):
        return None
    # FRONT, UPPER, ... are street names too: "OCEAN FRONT # 410" is Ocean Front, unit 410.
    name_word = designator in IDENTIFIER_OPTIONAL and not started and not _after_street(tokens, i)
    while not dual and j < n:  # skip the noise before the identifier
        if tokens[j] == "#" and token != "#" and not name_word:  # "APT # 3"
            j += 1
        elif tokens[j] in _ID_NOISE and j + 1 < n:  # "APT NO 3"
            j += 1
        else:
            break
    if j < n and is_identifier(tokens[j]):
        identifier = DIRECTIONALS.get(tokens[j], tokens[j])
        if designator == "FL":
            ordinal = _ORDINAL.match(identifier)
            if ordinal:
                identifier = ordinal.group(1)  # "FL 2ND" == "FL 2"
        return designator, identifier, j + 1
    if dual:
        return None
    if started:
        return designator, "", i + 1
    if designator in IDENTIFIER_OPTIONAL:
        return (designator, "", i + 1) if _after_street(tokens, i) else None
    if i + 2 < n and tokens[i + 1] in UNIT_DESIGNATORS:
        following = _unit_at(tokens, i + 1, started=True)
        if following and following[1]:
            return designator, "", i + 1  # "APT FL 3": the apartment's number is not given
    if _after_street(tokens, i):
        return designator, "", i + 1  # "718 DORCHESTER PL NE UNIT", "... PL NE UNIT CEDAR RAPIDS"
    if i == n - 1 and designator == "FL" and i >= 2 and tokens[i - 2] in STREET_SUFFIXES:
        return designator, "", i + 1  # "7411 S COTTAGE GROVE AVE GROUND FLOOR"
    return None


def _drop_stray_hashes(tokens: list[str]) -> list[str]:
    """Keep a "#" only where it marks a unit: after a street name, before an identifier.

    Done before the unit scan so that a dangling "#" ("MAIN ST #", "# APT 3") cannot
    change how the words around it are read, which keeps normalization idempotent.
    """
    if "#" not in tokens:
        return tokens
    kept: list[str] = []
    for i, token in enumerate(tokens):
        if token == "#" and not (
            kept and i + 1 < len(tokens) and is_identifier(tokens[i + 1])
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
        if rest[i] in UNIT_DESIGNATORS and _unit_at(rest, i, started=False):
            start = i
            break
    if start is None:
        return rest, []
    core: list[str] = rest[:start]
    units: list[tuple[str, str]] = []
    j = start
    while j < len(rest):
        segment = _unit_at(rest, j, started=True)
        if segment:
            designator, identifier, j = segment
            units.append((designator, identifier))
        else:
            designator, identifier = units[-1]
            units[-1] = (designator, f"{identifier} {rest[j]}".strip())
            j += 1
    return core, units


def _floor_number(word: str) -> str | None:
    ordinal = _ORDINAL.match(word)
    return ordinal.group(1) if ordinal else ORDINAL_WORDS.get(word)


def _floors_first(rest: list[str]) -> list[str]:
    """ "2ND FL" / "SECOND FLOOR" / "ST 2 FLOOR" -> "FL 2": the designator before its number."""
    for i in reversed(range(1, len(rest) - 1)):  # right to left: "2ND FL 3RD FL"
        if rest[i + 1] not in _FLOOR_WORDS:
            continue
        number = _floor_number(rest[i])
        if number is None and rest[i].isdigit() and len(rest[i]) <= 3 and (
            i + 2 == len(rest) or rest[i + 2] in UNIT_DESIGNATORS
        ) and (rest[i - 1] in STREET_SUFFIXES or rest[i - 1] in DIRECTIONALS):
            number = rest[i]  # "47 S MERIDAN ST 2 FLOOR"
        if number is not None:
            rest[i], rest[i + 1] = "FL", number
    return rest


def _leading_units_last(tokens: list[str]) -> list[str]:
    """ "APT 3 77 BAYVIEW TER", "SUITE 200 BLDG 17 7000 PEACHTREE RD", "4TH FL 300 E RANDOLPH ST":
    units typed before the house number are moved after the street.

    A single designator + identifier moves whenever a house number and a word follow it. A
    floor ("4TH FL") or several units move only if a street suffix follows the house number,
    since "2ND FL 3 ..." could be anything.
    """
    i, n, moved, floors = 0, len(tokens), [], False
    while i + 1 < n:
        if tokens[i] in UNIT_DESIGNATORS and is_identifier(tokens[i + 1]):
            if i + 2 < n and tokens[i + 1] in _NORTH_SOUTH and tokens[i + 2] in _EAST_WEST:
                # "UNIT S E 12 MAIN ST": the identifier is SE, as the street would read it
                moved += [tokens[i], _NORTH_SOUTH[tokens[i + 1]] + _EAST_WEST[tokens[i + 2]]]
                i += 3
                continue
            moved += tokens[i:i + 2]
        elif tokens[i + 1] in _FLOOR_WORDS and _floor_number(tokens[i]) is not None:
            moved += ["FL", _floor_number(tokens[i])]  # type: ignore[list-item]
            floors = True
        else:
            break
        i += 2
    if not moved or i + 1 >= n or not tokens[i][0].isdigit():
        return tokens
    if (floors or len(moved) > 2) and not any(t in STREET_SUFFIXES for t in tokens[i + 1:]):
        return tokens
    return tokens[i:] + moved


# --------------------------------------------------------------------------------
# Street core: directionals, name, suffix
# --------------------------------------------------------------------------------


def _join_split_directionals(tokens: list[str]) -> list[str]:
    """ "N E" (typed "N. E.") -> "NE", except where the pair is the whole street name.

    "908 PEACHTREE ST N E", "2350 WASHINGTON N E PL", "4805 S W 229TH" join; "123 S E ST"
    keeps E as the street name (pre-directional S), and "123 N E" stays as it is. Done on the
    tokens after the house number, before the units are found, so that the units are found
    in the same words on a second pass (normalization is idempotent).
    """
    n = len(tokens)
    out: list[str] = []
    i = 0
    while i < n:
        token = tokens[i]
        if i + 1 < n and token in _NORTH_SOUTH and tokens[i + 1] in _EAST_WEST and not (
            i == 0 and _street_name_pair(tokens)
        ):
            out.append(_NORTH_SOUTH[token] + _EAST_WEST[tokens[i + 1]])
            i += 2
        else:
            out.append(token)
            i += 1
    return out


def _street_name_pair(tokens: list[str]) -> bool:
    """Whether the "S E" that starts ``tokens`` is pre-directional + street name: nothing but a
    lone suffix and units follow it ("123 S E", "123 S E ST", "123 S E ST APT 4")."""
    k = 2
    if k < len(tokens) and tokens[k] in STREET_SUFFIXES and tokens[k] not in UNIT_DESIGNATORS:
        k += 1
    return k == len(tokens) or tokens[k] in UNIT_DESIGNATORS


def _name_words(name: list[str]) -> list[str]:
    """The street name: words as typed, suffix abbreviations spelled out, inner directionals
    abbreviated ("OLD NORTH CHURCH" == "OLD N CHURCH", "BALLAST PT W" == "BALLAST POINT WEST").

    A directional that starts the name (after any pre-directional) is kept as typed: it may
    be the name itself ("W NORTH AVE", "S E ST").
    """
    words: list[str] = []
    named = False  # a word that is not a directional came before
    for word in name:
        if word in DIRECTIONALS:
            words.append(DIRECTIONALS[word] if named else word)
        else:
            words.append(NAME_SPELLINGS.get(word, word))
            named = True
    return words


def _has_digit(token: str) -> bool:
    return any(ch.isdigit() for ch in token)


def _core_without_suffix(core: list[str]) -> list[str]:
    name = core
    pre = post = None
    if len(name) >= 2 and name[-1] in DIRECTIONALS and name[-2] not in DIRECTIONALS:
        post, name = DIRECTIONALS[name[-1]], name[:-1]
    if len(name) >= 2 and name[0] in DIRECTIONALS:
        pre, name = DIRECTIONALS[name[0]], name[1:]
    if len(name) == 1 and name[0] in STREET_SUFFIXES:
        # The street type *is* the name: "AVENUE N", "123 WELLS". Standard spelling.
        words = [STREET_SUFFIXES[name[0]]]
    elif (
        len(name) == 2
        and name[0] in STREET_SUFFIXES
        and (name[1].isdigit() or (len(name[1]) == 1 and name[1].isalpha()))
    ):
        words = [STREET_SUFFIXES[name[0]], name[1]]  # "HIGHWAY 101", "ROUTE 9", "AVENUE B"
    else:
        words = _name_words(name)  # "AVENUE OF THE STARS", "BOULEVARD GRANADA", "S WABASH"
    return [p for p in (pre, *words, post) if p]


def canonical_core(core: list[str]) -> list[str]:
    """Directionals, name, suffix and tail of the street core, in Publication 28 form."""
    if not core:
        return []
    s = 0
    for i in range(len(core) - 1, 0, -1):
        if core[i] in STREET_SUFFIXES:
            s = i
            break
    if not s:
        return _core_without_suffix(core)
    name, suffix, tail = core[:s], core[s], core[s + 1:]
    standard = STREET_SUFFIXES[suffix]
    post = None
    if tail and tail[0] in DIRECTIONALS:
        post, tail = DIRECTIONALS[tail[0]], tail[1:]
    if len(name) == 1 and name[0] in DIRECTIONALS:
        # A lone directional before a suffix word: which one is the street's name?
        direction = name[0]
        if standard in THOROUGHFARE_TYPES and (
            not tail or (_has_digit(tail[0]) and standard not in ROUTE_TYPES)
        ):
            # "123 N ST" (the lettered street) and "123 NORTH ST" (North Street), maybe with a
            # unit number after them: the directional is the name and is kept as typed.
            out = [direction, standard]
        elif not tail:
            # "1520 N WELLS" == "1520 NORTH WELLS": a pre-directional and a name that
            # happens to be a suffix word (Chicago writes its streets without the suffix).
            out = [DIRECTIONALS[direction], NAME_SPELLINGS.get(suffix, suffix)]
        else:
            # "5500 N ST LOUIS", "9912 S AVENUE H", "17380 N HWY A1A", "3645 N ROUTE Z": a
            # pre-directional, then a name that starts with a suffix word.
            return [DIRECTIONALS[direction], *_core_without_suffix(core[s:])]
    else:
        out = []
        if len(name) >= 2 and name[0] in DIRECTIONALS:
            out.append(DIRECTIONALS[name[0]])
            name = name[1:]
        out += _name_words(name)
        out.append(standard)
    if post:
        out.append(post)
    # What trails the street is kept, its directionals abbreviated ("HWY 19 N", "LOOP 70 W").
    return out + [DIRECTIONALS.get(word, word) for word in tail]


# --------------------------------------------------------------------------------
# The whole line
# --------------------------------------------------------------------------------


def _is_house_number(tokens: list[str]) -> bool:
    first = tokens[0]
    return first[0].isdigit() or (first in HOUSE_NUMBER_WORDS and len(tokens) >= 2)


def parse_street(tokens: list[str]) -> Street:
    """Parse the cleaned tokens of a street line into house number, core and units."""
    # A leading "#" is not a unit ("#123 MAIN ST") unless a house number follows
    # its identifier ("#3 77 BAYVIEW TER", moved to the end just below).
    while tokens and tokens[0] == "#" and not (
        len(tokens) >= 4 and is_identifier(tokens[1]) and tokens[2][0].isdigit()
    ):
        tokens = tokens[1:]
    if len(tokens) >= 3 and (tokens[0] in UNIT_DESIGNATORS or tokens[1] in _FLOOR_WORDS):
        tokens = _leading_units_last(tokens)
        while tokens and tokens[0] == "#":
            tokens = tokens[1:]  # it did not lead a unit after all: "# 12-14 2ND FL ..."
    house: list[str] = []
    if tokens and _is_house_number(tokens):
        house.append(tokens[0])
        k = 1
        while k < len(tokens) and tokens[k] == "#":
            k += 1  # "123 # 1/2 ...": no street name yet, so not a unit
        if k < len(tokens) and _FRACTION.match(tokens[k]):
            house.append(tokens[k])  # "123 1/2 MAIN ST"
            k += 1
        if (
            k + 2 < len(tokens)
            and len(tokens[k]) == 1
            and tokens[k].isalpha()
            and tokens[k] not in DIRECTIONALS
            and tokens[k + 1] in DIRECTIONALS
        ):
            house.append(tokens[k])  # "4922 B S CORNELL AVE": the letter belongs to the number
            k += 1
        tokens = tokens[k:]
    rest: list[str] = []
    for i, token in enumerate(tokens):
        glued = _GLUED_UNIT.match(token) if i >= 1 and token[0].isalpha() else None
        if glued:
            rest.extend(glued.groups())
        else:
            rest.append(token)
    rest = _floors_first(_join_split_directionals(_drop_stray_hashes(rest)))
    core, units = _split_units(_drop_stray_hashes(rest))  # again: "# 2ND FL" -> "# FL 2"
    return Street(house=house, core=canonical_core(core), units=units)
