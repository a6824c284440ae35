"""What every parser checks: lists and names of the right type, the echoed address, counts, and the
hash of a payload.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from skiptrace.provider.model import (
    TraceRequest,
    unreadable,
)


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def list_field(where: str, value: Any) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise unreadable(f"{where} is {type(value).__name__}, not a list")
    return value


def person_name(where: str, name: Any) -> tuple[str, str, str]:
    """(full, first, last) from a provider name object (or a plain string)."""
    if name is None:
        return "", "", ""
    if isinstance(name, str):
        return name.strip(), "", ""
    if not isinstance(name, dict):
        raise unreadable(f"{where}.name is {type(name).__name__}, not an object")
    parts = {k: name.get(k) for k in ("first", "middle", "last", "full")}
    for key, value in parts.items():
        if value is not None and not isinstance(value, str):
            raise unreadable(f"{where}.name.{key} is {type(value).__name__}, not text")
    first, last = (parts["first"] or "").strip(), (parts["last"] or "").strip()
    full = (parts["full"] or "").strip() or " ".join(x for x in (first, (parts["middle"] or "").strip(), last) if x)
    return full, first, last


def payload_hash(raw: Any) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def zip5(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    digits = re.sub(r"\D", "", str(value).split("-")[0])
    if len(digits) >= 5:
        return digits[:5]
    if 3 <= len(digits) <= 4:  # "2122" / 2122: a zip that lost its leading zero(s)
        return digits.zfill(5)
    return None


def house_number(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    m = re.match(r"\s*(\d+)", str(value))
    return int(m.group(1)) if m else None


def check_address_echo(where: str, echo: Any, req: TraceRequest) -> None:
    if echo is None:
        return
    if not isinstance(echo, dict):
        raise unreadable(f"{where}.propertyAddress is not an object")
    ours_zip, echo_zip = zip5(req.zip), zip5(echo.get("zip"))
    if ours_zip and echo_zip and ours_zip != echo_zip:
        raise unreadable(
            f"{where} address echo zip {echo_zip} does not match request {req.request_id!r} zip {ours_zip}"
        )
    ours_house = house_number(req.street)
    echo_house = house_number(echo.get("houseNumber"))
    if echo_house is None:
        echo_house = house_number(echo.get("street"))
    if ours_house is not None and echo_house is not None and ours_house != echo_house:
        raise unreadable(
            f"{where} address echo house number {echo_house} does not match "
            f"request {req.request_id!r} house number {ours_house}"
        )
