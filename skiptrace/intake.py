"""Lead intake: a CSV file or a JSON body -> ``LeadInput`` records.

Pure Python, no Django and no database: the caller (run creation, the CLI, the admin upload)
decides what a row becomes. Two kinds of problems are reported differently:

* a problem with the whole input raises (``IntakeError`` for a CSV file, ``LeadValidationError``
  for a JSON body) and the caller creates nothing;
* a problem with one row sets ``LeadInput.problem``; the caller makes that row a ``failed`` item
  with ``last_error=f"invalid_input: {problem}"`` and the other rows run.

CSV decoding, chosen so a 100,000-row file is read once, in 64 KiB chunks, never whole:

* The first chunk is sniffed: binary content (known magic numbers, many NUL or control bytes),
  UTF-16/32 (Excel's "Unicode text") and emptiness are refused up front; a UTF-8 BOM is dropped.
* The bytes are then split into physical lines (CRLF, LF and CR all end a line; a CR at the end
  of a chunk is held back in case its LF comes with the next chunk) and each line is decoded on
  its own: as UTF-8 when it is valid UTF-8, else as Windows-1252. A line-level fallback needs no
  look-ahead or re-reading, and it is right for files glued together from a UTF-8 export and an
  old Excel one. Mis-detection is not a practical worry: cp1252 text with accented letters is
  almost never valid UTF-8, and valid UTF-8 read as cp1252 would be mojibake anyway.
  (Line endings are never part of a UTF-8 multi-byte sequence, so splitting first is safe.)
* NUL bytes are deleted (the ``csv`` module refuses them). The delimiter is sniffed from the
  header line: comma unless the header has more semicolons or tabs.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

MAX_LEADS = 100_000
MAX_FIELD_CHARS = 200  # a longer cell makes its row invalid ("field too long: <field>")
MAX_LEAD_ID_CHARS = 64
# The lead table stores the raw zip and state in bounded columns (PostgreSQL enforces the bound);
# a longer value is no zip or state anyway, so its row fails as "field too long: zip".
FIELD_MAX_CHARS: dict[str, int] = {"state": 32, "zip": 16}
_STATE_MAX, _ZIP_MAX = FIELD_MAX_CHARS["state"], FIELD_MAX_CHARS["zip"]
MAX_FIELD_ERRORS = 50  # parse_json_leads stops collecting after this many

CHUNK_BYTES = 64 * 1024
# The csv module's default (128 KiB) would turn one oversized cell into a crash; raised once,
# process-wide (the limit is global in the csv module). A cell beyond this is not a lead list.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
MAX_LINE_BYTES = CSV_FIELD_LIMIT
# A record spanning more physical lines than this is a quote that was never closed, which would
# silently swallow the rows after it; such a file is refused instead.
MAX_LINES_PER_ROW = 100

FIELDS: tuple[str, ...] = ("lead_id", "first_name", "last_name", "street", "city", "state", "zip")
TEXT_FIELDS: tuple[str, ...] = FIELDS[1:]

# Canonical field -> header names, the contract's first (in its order), then extras seen in real
# lead lists. Property address only: "Mailing ..." columns are the owner's mail address and must
# never be mistaken for the property.
HEADER_ALIASES: dict[str, tuple[str, ...]] = {
    "lead_id": ("LeadID", "lead_id", "Lead ID", "id", "Record ID"),
    "first_name": (
        "First Name",
        "first_name",
        "Owner First Name",
        "Owner 1 First Name",
        "First",
    ),
    "last_name": (
        "Last Name",
        "Owner Last Name",
        "last_name",
        "Owner 1 Last Name",
        "Last",
        "Surname",
    ),
    "street": (
        "Street",
        "Address",
        "Property Address",
        "Site Address",
        "Street Address",
        "Property Street",
        "Property Street Address",
        "Address 1",
        "Address Line 1",
        "Property Address Line 1",
        "Situs Address",
        "Situs Street",
    ),
    "city": ("City", "Property City", "Site City", "Situs City"),
    "state": ("State", "Property State", "Site State", "Situs State"),
    "zip": (
        "Zip",
        "Zip Code",
        "Postal Code",
        "Property Zip",
        "Property Zip Code",
        "Property Postal Code",
        "Site Zip",
        "Site Zip Code",
        "Situs Zip",
        "ZIP5",
        "Postal",
    ),
}
# PropStream and county exports keep the unit in its own column ("Address", "Unit #"); it is
# appended to the street so "12 Main St" + "4" becomes "12 Main St #4" (a condo's owner differs
# per unit). Reported by map_headers under the key "unit"; not a LeadInput field.
UNIT_ALIASES: tuple[str, ...] = (
    "Unit",
    "Unit #",
    "Unit Number",
    "Unit No",
    "Apt",
    "Apartment",
    "Suite",
    "Property Unit",
    "Property Unit #",
    "Site Unit",
    "Address 2",
    "Address Line 2",
    "Property Address Line 2",
)
# The street aliases the contract documents; the "no street column" message names these.
_CONTRACT_STREET_HEADERS = ("Street", "Address", "Property Address", "Site Address")


def canonical_header(name: str) -> str:
    """Lower-case ``name`` and drop every non-alphanumeric character ("Property Zip " -> "propertyzip")."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _build_alias_index() -> dict[str, str]:
    index: dict[str, str] = {}
    groups = [*HEADER_ALIASES.items(), ("unit", UNIT_ALIASES)]
    for field, aliases in groups:
        for alias in aliases:
            key = canonical_header(alias)
            owner = index.setdefault(key, field)
            if owner != field:  # pragma: no cover - guards edits to the tables above
                raise RuntimeError(f"header alias {alias!r} maps to both {owner} and {field}")
    return index


_ALIAS_TO_FIELD: dict[str, str] = _build_alias_index()


class IntakeError(ValueError):
    """The whole input is unusable; the message is shown to the user as is."""


class LeadValidationError(ValueError):
    """A JSON body that breaks the lead schema; ``fields`` maps "leads[3].zip" -> "must be a string"."""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields: dict[str, str] = dict(fields)
        shown = "; ".join(f"{k}: {v}" for k, v in itertools.islice(self.fields.items(), 5))
        more = len(self.fields) - 5
        super().__init__(f"invalid leads: {shown}" + (f" (and {more} more)" if more > 0 else ""))


@dataclass(frozen=True, slots=True)
class LeadInput:
    """One lead as it arrived: stripped strings, "" for an absent value, nothing normalized yet."""

    lead_id: str | None  # None: the source had no id; the caller derives one (derive_lead_id)
    first_name: str
    last_name: str
    street: str
    city: str
    state: str
    zip: str
    row_number: int | None = None  # 1-based data row of a CSV (header excluded); None for JSON
    problem: str | None = None  # set: the caller fails the item with f"invalid_input: {problem}"

    def normalize_kwargs(self) -> dict[str, str]:
        """The keyword arguments of ``normalize.normalize_lead`` / ``lead_problem``."""
        return {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "street": self.street,
            "city": self.city,
            "state": self.state,
            "zip": self.zip,
        }


# --------------------------------------------------------------------------------------------
# Headers


def map_headers(headers: list[str]) -> dict[str, int]:
    """Canonical field -> column index for the known columns of ``headers``.

    Matching ignores case, spaces and punctuation. When several columns match one field, the
    leftmost wins. A unit column, when present, is reported under "unit". Raises IntakeError
    when no column can be the street, since then no row could run.
    """
    mapping: dict[str, int] = {}
    for index, name in enumerate(headers):
        field = _ALIAS_TO_FIELD.get(canonical_header(name))
        if field is not None and field not in mapping:
            mapping[field] = index
    if "street" not in mapping:
        raise IntakeError(
            "no street column: expected one of "
            + ", ".join(_CONTRACT_STREET_HEADERS)
            + "; found: "
            + _describe_headers(headers)
        )
    return mapping


def _describe_headers(headers: list[str], limit: int = 30) -> str:
    names = [_clip(h.strip(), 40) for h in headers[:limit] if h.strip()]
    if not names:
        return "(no column names)"
    more = len(headers) - limit
    return ", ".join(names) + (f", ... ({more} more)" if more > 0 else "")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# CSV: bytes -> lines -> rows


_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_32_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
_BINARY_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "it looks like an Excel workbook or a zip archive; save it as CSV"),
    (b"\xd0\xcf\x11\xe0", "it looks like an old Excel workbook; save it as CSV"),
    (b"%PDF", "it looks like a PDF"),
    (b"\x89PNG", "it looks like an image"),
    (b"\xff\xd8\xff", "it looks like an image"),
    (b"GIF8", "it looks like an image"),
    (b"\x1f\x8b", "it looks like a gzip archive"),
    (b"\x7fELF", "it looks like a program"),
)
# C0 control bytes that never occur in text (tab, LF, VT, FF, CR and DOS's EOF mark excluded).
_CONTROL_BYTES = bytes(b for b in range(1, 32) if b not in (9, 10, 11, 12, 13, 26))
_BINARY_MESSAGE = "not a CSV file (binary content)"
_UTF16_MESSAGE = "not a CSV file this tool reads (UTF-16 text); save it as CSV UTF-8 or Windows-1252"


def _sniff_binary(head: bytes) -> None:
    """Refuse content that is plainly not text, judging by the first chunk only."""
    for magic, hint in _BINARY_MAGIC:
        if head.startswith(magic):
            raise IntakeError(f"{_BINARY_MESSAGE}; {hint}")
    if head.startswith(_UTF16_32_BOMS):
        raise IntakeError(_UTF16_MESSAGE)
    size = len(head)
    nuls = head.count(0)
    if nuls * 10 > size:
        # ASCII in UTF-16 without a BOM: every other byte is NUL.
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) * 10 >= (size // 2) * 9 and min(even, odd) * 10 <= size // 2:
            raise IntakeError(_UTF16_MESSAGE)
        raise IntakeError(_BINARY_MESSAGE)
    controls = size - len(head.translate(None, _CONTROL_BYTES))
    if controls * 20 > size:
        raise IntakeError(_BINARY_MESSAGE)


def _read_chunk(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    if not data:
        return b""
    if isinstance(data, str):  # a text-mode file handed over by mistake: be lenient
        return data.encode("utf-8")
    return bytes(data)


def _byte_lines(first: bytes, stream: IO[bytes], eof: bool) -> Iterator[bytes]:
    """Physical lines of the input, each with its line ending, NUL bytes removed.

    Reads ``CHUNK_BYTES`` at a time; only an unfinished line is carried between chunks.
    """
    pending: list[bytes] = []  # parts of a line that has not ended yet
    pending_size = 0
    data = first
    line_count = 0
    while True:
        if data:
            if b"\x00" in data:
                data = data.replace(b"\x00", b"")
            if b"\n" not in data and b"\r" not in data and not eof:
                pending.append(data)  # no line ends here: avoid re-copying a long line
                pending_size += len(data)
            else:
                if pending:
                    pending.append(data)
                    data = b"".join(pending)
                    pending.clear()
                lines = data.splitlines(keepends=True)
                # Hold back an unfinished last line, and a bare CR whose LF may be next.
                if not eof and lines and not lines[-1].endswith(b"\n"):
                    tail = lines.pop()
                    pending.append(tail)
                    pending_size = len(tail)
                else:
                    pending_size = 0
                line_count += len(lines)
                yield from lines
            if pending_size > MAX_LINE_BYTES:
                raise IntakeError(
                    f"line {line_count + 1} is longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB;"
                    " this does not look like a lead list"
                )
        if eof:
            if pending:
                yield b"".join(pending)
            return
        data = _read_chunk(stream, CHUNK_BYTES)
        eof = not data


def _decode_lines(lines: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 where a line is valid UTF-8, Windows-1252 otherwise (see the module docstring)."""
    for raw in lines:
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            # cp1252 leaves five bytes undefined; they become U+FFFD rather than an error.
            yield raw.decode("cp1252", "replace")


_DELIMITERS = (",", ";", "\t")


def _sniff_delimiter(header_line: str) -> str:
    """Comma, unless the header line holds more semicolons or tabs than commas."""
    best, best_count = ",", header_line.count(",")
    for delimiter in _DELIMITERS[1:]:
        count = header_line.count(delimiter)
        if count > best_count:
            best, best_count = delimiter, count
    return best


def _clean_cell(value: str) -> str:
    value = value.strip()
    if "\n" in value or "\r" in value:
        # A quoted cell written over several lines ("12 Main St\nApt 4") is one address line.
        value = " ".join(value.split())
    return value


_UNIT_DESIGNATORS = ("#", "# ", "apt ", "unit ", "ste ", "suite ", "apartment ")


def _with_unit(street: str, unit: str) -> str:
    """``street`` with the unit column appended, unless the street already ends with it."""
    if not unit or not street:
        return street  # a unit alone is no address: the missing street is what the row lacks
    if " " not in unit and not unit.startswith("#"):
        unit = "#" + unit  # "4B" -> "#4B"; "Apt 4" and "#4" stay as they are
    low_street = street.lower()
    bare = unit.lstrip("#").strip().lower()
    if low_street.endswith(" " + unit.lower()) or any(
        low_street.endswith(" " + designator + bare) for designator in _UNIT_DESIGNATORS
    ):
        return street
    return f"{street} {unit}"


def _shorten_lead_id(lead_id: str) -> str:
    """A too-long id kept recognizable and distinct: its first 55 characters + "~" + 8 hex."""
    digest = hashlib.sha256(lead_id.encode("utf-8")).hexdigest()[:8]
    return f"{lead_id[: MAX_LEAD_ID_CHARS - 9]}~{digest}"


def iter_csv_leads(stream: IO[bytes], *, max_rows: int = MAX_LEADS) -> Iterator[LeadInput]:
    """The leads of a CSV file, one ``LeadInput`` per non-blank data row, read lazily.

    Whole-file problems raise IntakeError: the ones found in the first chunk and the header
    (empty file, binary content, no street column) right away, at the call; later ones (more than
    ``max_rows`` rows, a quote never closed, a gigantic cell) when reading reaches them, so a
    caller that reads inside a transaction creates nothing. A header with no data rows yields
    nothing. Blank rows are skipped but still counted in ``row_number``, so row numbers match the
    file's lines as a spreadsheet shows them (minus the header). A copy of the header row (two
    exports pasted together) is skipped as well.
    """
    if max_rows < 0:
        raise ValueError("max_rows must not be negative")
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)

    head = b""
    eof = False
    while len(head) < CHUNK_BYTES:  # a stream may return short reads; sniff a full chunk
        chunk = _read_chunk(stream, CHUNK_BYTES - len(head))
        if not chunk:
            eof = True
            break
        head += chunk
    if head.startswith(_UTF8_BOM):
        head = head[len(_UTF8_BOM) :]
    if not head.strip(b" \t\r\n\f\v"):
        if eof:
            raise IntakeError("file is empty")
    else:
        _sniff_binary(head)

    lines = _decode_lines(_byte_lines(head, stream, eof))
    # Leading blank lines are dropped (nothing is open before the header), so they cost nothing.
    peeked: list[str] = []
    header_line = ""
    for line in lines:
        if line.strip():
            peeked.append(line)
            header_line = line
            break
    reader = csv.reader(itertools.chain(peeked, lines), delimiter=_sniff_delimiter(header_line))

    header: list[str] | None = None
    try:
        for row in reader:
            if "".join(row).strip():
                header = row
                break
    except csv.Error as exc:
        raise IntakeError(f"line {reader.line_num}: malformed CSV header ({exc})") from None
    if header is None:
        raise IntakeError("file has no header row" if header_line else "file is empty")
    header = [cell.strip() for cell in header]
    mapping = map_headers(header)
    return _iter_rows(reader, header, mapping, max_rows)


def _iter_rows(reader: Any, header: list[str], mapping: dict[str, int], max_rows: int) -> Iterator[LeadInput]:
    width = len(header)
    street_index = mapping["street"]
    needed = max(mapping.values()) + 1
    # One C-level lookup per row: the seven fields and the unit, in that order. An absent column
    # reads index -1, the "" appended to every row below.
    pick = operator.itemgetter(*(mapping.get(field, -1) for field in (*FIELDS, "unit")))
    row_number = 0
    count = 0
    last_line = reader.line_num
    try:
        for row in reader:
            row_number += 1
            line_num = reader.line_num
            spanned = line_num - last_line
            last_line = line_num
            if spanned > MAX_LINES_PER_ROW:
                raise IntakeError(
                    f"row {row_number} (line {line_num - spanned + 1}) runs over {spanned}"
                    " lines: a quoted cell is probably missing its closing quote"
                )
            if not row:
                continue
            if row[0].startswith("\ufeff"):  # a BOM inside the file: exports pasted together
                row[0] = row[0][1:]
            if not "".join(row).strip():
                continue
            size = len(row)
            if (
                size == width
                and row[street_index].strip() == header[street_index]
                and [cell.strip() for cell in row] == header
            ):
                continue  # the header again: two exports pasted into one file
            count += 1
            if count > max_rows:
                raise IntakeError(f"more than {max_rows} rows")
            if size < needed:
                row.extend([""] * (needed - size))
            row.append("")
            cells = [cell.strip() for cell in pick(row)]
            # Lines are split at every CR and LF, so only a record read from several lines can
            # hold a line break in a cell.
            if (
                spanned > 1
                or size > width
                or cells[7]
                or max(map(len, cells)) > MAX_LEAD_ID_CHARS
                or len(cells[5]) > _STATE_MAX
                or len(cells[6]) > _ZIP_MAX
            ):
                yield _checked_lead(cells, row[width:size], row_number)
            else:
                yield LeadInput(
                    cells[0] or None,
                    cells[1],
                    cells[2],
                    cells[3],
                    cells[4],
                    cells[5],
                    cells[6],
                    row_number,
                )
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise IntakeError(
                f"row {row_number + 1}: a cell is larger than"
                f" {CSV_FIELD_LIMIT // (1024 * 1024)} MiB; this does not look like a lead list"
            ) from None
        raise IntakeError(f"line {reader.line_num}: malformed CSV ({exc})") from None


def _checked_lead(cells: list[str], extra: list[str], row_number: int) -> LeadInput:
    """The slow path of a row: line breaks, long cells, extra cells or a unit column.

    ``cells`` holds the stripped lead_id, six text fields and unit; ``extra`` the cells beyond
    the header's width.
    """
    problem: str | None = None
    if "".join(extra).strip():
        problem = "row has more cells than the header"
    cells = [_clean_cell(cell) for cell in cells]
    lead_id: str | None = cells[0] or None
    if lead_id is not None and len(lead_id) > MAX_LEAD_ID_CHARS:
        lead_id = _shorten_lead_id(lead_id)
        problem = problem or "lead_id too long"
    values = dict(zip(TEXT_FIELDS, cells[1:7], strict=True))
    for field in TEXT_FIELDS:
        limit = FIELD_MAX_CHARS.get(field, MAX_FIELD_CHARS)
        if len(values[field]) > limit:
            values[field] = values[field][:limit]
            problem = problem or f"field too long: {field}"
    unit = cells[7]
    if len(unit) > MAX_FIELD_CHARS:
        problem = problem or "field too long: unit"
    elif unit:
        street = _with_unit(values["street"], unit)
        if len(street) > MAX_FIELD_CHARS:
            street = street[:MAX_FIELD_CHARS]
            problem = problem or "field too long: street"
        values["street"] = street
    return LeadInput(lead_id=lead_id, row_number=row_number, problem=problem, **values)


# --------------------------------------------------------------------------------------------
# JSON


JSON_LEAD_KEYS = frozenset(("lead_id", *TEXT_FIELDS))


def parse_json_leads(leads: Any, *, max_leads: int = MAX_LEADS) -> list[LeadInput]:
    """Validate the ``leads`` member of a JSON body and return its leads in order.

    Wrong types are refused, never converted: LeadValidationError with ``fields`` naming each
    bad value ("leads[3].zip": "must be a string"), at most ``MAX_FIELD_ERRORS`` of them. A
    well-typed lead that cannot run (no street, say) is returned; the caller fails it via
    ``normalize.lead_problem``. A field longer than ``MAX_FIELD_CHARS`` sets ``problem`` as for
    a CSV row. ``lead_id`` is required (1..64 characters once stripped). An unknown key is an
    error naming it ("leads[0].forst_name": "unknown key"): a misspelt field would otherwise send
    the lead without it.
    """
    if not isinstance(leads, list):
        raise LeadValidationError({"leads": "must be a list"})
    if not leads:
        raise LeadValidationError({"leads": "must not be empty"})
    if len(leads) > max_leads:
        raise LeadValidationError({"leads": f"at most {max_leads} leads"})

    errors: dict[str, str] = {}
    result: list[LeadInput] = []
    for i, item in enumerate(leads):
        if len(errors) >= MAX_FIELD_ERRORS:
            break
        if not isinstance(item, dict):
            errors[f"leads[{i}]"] = "must be an object"
            continue
        for key in item:
            if key not in JSON_LEAD_KEYS:
                errors[f"leads[{i}].{str(key)[:64]}"] = "unknown key"
        lead_id = item.get("lead_id")
        if lead_id is None:
            errors[f"leads[{i}].lead_id"] = "is required"
        elif not isinstance(lead_id, str):
            errors[f"leads[{i}].lead_id"] = "must be a string"
        elif not is_text(lead_id):
            errors[f"leads[{i}].lead_id"] = "must be valid Unicode text"
        elif len(lead_id) > MAX_LEAD_ID_CHARS:  # as sent: the documented schema's maxLength
            errors[f"leads[{i}].lead_id"] = f"must be at most {MAX_LEAD_ID_CHARS} characters"
        else:
            lead_id = lead_id.replace("\x00", "").strip()  # NUL: stripped, as in CSV intake
            if not lead_id:
                errors[f"leads[{i}].lead_id"] = "must not be empty"
        values: dict[str, str] = {}
        too_long: str | None = None
        for field in TEXT_FIELDS:
            value = item.get(field)
            if value is None:
                values[field] = ""
            elif isinstance(value, str) and not is_text(value):
                errors[f"leads[{i}].{field}"] = "must be valid Unicode text"
            elif isinstance(value, str):
                value = value.replace("\x00", "").strip()
                limit = FIELD_MAX_CHARS.get(field, MAX_FIELD_CHARS)
                if len(value) > limit:
                    value = value[:limit]
                    too_long = too_long or f"field too long: {field}"
                values[field] = value
            else:
                errors[f"leads[{i}].{field}"] = "must be a string"
        if not errors:
            result.append(LeadInput(lead_id=lead_id, problem=too_long, **values))
    if errors:
        raise LeadValidationError(dict(itertools.islice(errors.items(), MAX_FIELD_ERRORS)))
    return result


# --------------------------------------------------------------------------------------------
# Lead ids


def is_text(value: str) -> bool:
    """False for a lone surrogate ("\\ud800" in JSON): it parses but cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def derive_lead_id(lead: LeadInput) -> str:
    """The lead's id: its own when it has one, else one derived stably from its content.

    A lead that normalizes gets "L-" + 16 hex of its normalized signature, so re-importing a file
    and two spellings of one lead land on the same id. One that does not normalize (or carries an
    intake problem) gets "L-" + 16 hex of sha256 over its raw stripped fields. Needs
    ``skiptrace.normalize``; an ImportError propagates rather than silently producing ids that
    would change once the module is there.
    """
    if lead.lead_id is not None:
        return lead.lead_id
    from skiptrace import normalize  # lazy: the module must import without its sibling

    if lead.problem is None:
        try:
            normalized = normalize.normalize_lead(**lead.normalize_kwargs())
        except ValueError:  # normalize.InvalidLead is a ValueError
            normalized = None
        if normalized is not None:
            return "L-" + _hex16(normalized.signature)
    raw = "|".join((lead.first_name, lead.last_name, lead.street, lead.city, lead.state, lead.zip))
    return "L-" + hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]


_HEX = frozenset("0123456789abcdef")


def _hex16(signature: Any) -> str:
    """16 hex characters of a signature: its own prefix when it is hex, else a hash of it."""
    if isinstance(signature, bytes):
        return signature.hex()[:16] if len(signature) >= 8 else _sha16(signature)
    text = str(signature).lower()
    if len(text) >= 16 and _HEX.issuperset(text[:16]):
        return text[:16]
    return _sha16(text.encode("utf-8"))


def _sha16(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
