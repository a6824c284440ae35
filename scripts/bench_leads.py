"""Deterministic lead lists for the benchmarks (scripts/bench.py) — no Django, no network.

Every lead of one list is a distinct normalized input (house number x street block is a bijection
of the index), so "N unique leads" really means N provider items when nothing is cached.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

HEADER = ["Lead ID", "Owner First Name", "Owner Last Name", "Property Address", "Property City",
          "Property State", "Property Zip"]
FIRST = ["James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "Carlos", "Mei",
         "Aisha", "Tom", "Denise", "Harold", "Gloria", "Kevin"]
LAST = ["Smith", "Garcia", "Johnson", "Nguyen", "Brown", "Martinez", "Lee", "Walker", "Hall", "Young",
        "Patel", "Kim", "Alvarez", "Thompson", "Lopez", "Clark"]
STREETS = ["Oak", "Maple", "Cedar", "Pine", "Elm", "Lakeview", "Sunset", "Hillcrest", "River", "Park",
           "Willow", "Magnolia"]
SUFFIX = ["St", "Ave", "Dr", "Ln", "Ct", "Blvd", "Rd", "Way", "Ter", "Pl"]
CITIES = [("Tampa", "FL", "336"), ("Atlanta", "GA", "303"), ("Dallas", "TX", "752"), ("Phoenix", "AZ", "850"),
          ("Memphis", "TN", "381"), ("Detroit", "MI", "482"), ("Baltimore", "MD", "212")]
HOUSES = 9990


def lead_row(i: int, *, prefix: str = "B", unit_frac: float = 0.0, bad_frac: float = 0.0) -> list[str]:
    """One CSV row (in HEADER order) of lead ``i``; unique per ``i`` (below 1.2 million)."""
    rng = random.Random(i * 7919 + 17)
    house = 10 + i % HOUSES
    block = i // HOUSES
    street = f"{house} {STREETS[block % len(STREETS)]} {SUFFIX[(block // len(STREETS)) % len(SUFFIX)]}"
    if block >= len(STREETS) * len(SUFFIX):
        street += f" {block // (len(STREETS) * len(SUFFIX))}"  # beyond 1.2M: still unique, never used
    city, state, zip3 = CITIES[i % len(CITIES)]
    zip_ = f"{zip3}{i % 100:02d}"
    if unit_frac and rng.random() < unit_frac:
        street += f" Apt {rng.randint(1, 40)}"
    if bad_frac and rng.random() < bad_frac:
        street = ""  # invalid row: becomes a failed item "invalid_input: ..." at intake
    return [f"{prefix}-{i:06d}", rng.choice(FIRST), rng.choice(LAST), street, city, state, zip_]


def rows(n: int, **kw) -> Iterator[list[str]]:
    for i in range(n):
        yield lead_row(i, **kw)


def write_csv(path: Path, n: int, **kw) -> Path:
    """A lead list the way ops export it: UTF-8 with BOM, CRLF, the usual 'Owner ...' headers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows(n, **kw))
    return path
