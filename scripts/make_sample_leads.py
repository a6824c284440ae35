"""Writes samples/leads.csv: the shared sample's tricky rows plus generated ones (deterministic).

Run: .venv/bin/python scripts/make_sample_leads.py  (the output is committed; the demo reads it)
"""

import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRICKY = ROOT / "tests" / "fixtures" / "leads_sample.csv"
FIRST = ["James", "Maria", "Robert", "Linda", "Michael", "Patricia", "David", "Jennifer", "Carlos", "Mei", "Aisha", "Tom"]
LAST = ["Smith", "Garcia", "Johnson", "Nguyen", "Brown", "Martinez", "Lee", "Walker", "Hall", "Young", "Patel", "Kim"]
STREETS = ["Oak", "Maple", "Cedar", "Pine", "Elm", "Lakeview", "Sunset", "Hillcrest", "River", "Park"]
SUFFIX = ["St", "Ave", "Dr", "Ln", "Ct", "Blvd", "Rd", "Way", "Ter", "Pl"]
CITIES = [("Tampa", "FL", "336"), ("Atlanta", "GA", "303"), ("Dallas", "TX", "752"), ("Phoenix", "AZ", "850"),
          ("Memphis", "TN", "381"), ("Detroit", "MI", "482"), ("Baltimore", "MD", "212")]
HEADER = ["Lead ID", "Owner First Name", "Owner Last Name", "Property Address", "Property City", "Property State", "Property Zip"]


def main() -> None:
    rng = random.Random(2026)
    rows = []
    if TRICKY.exists():
        with TRICKY.open(encoding="utf-8-sig", newline="") as fh:
            rows.extend(list(csv.reader(fh))[1:])
    n = 0
    while len(rows) < 100:
        n += 1
        city, state, zip3 = rng.choice(CITIES)
        street = f"{rng.randint(10, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIX)}"
        if rng.random() < 0.15:
            street += f" Apt {rng.randint(1, 40)}"
        rows.append([f"D-{n:04d}", rng.choice(FIRST), rng.choice(LAST), street, city, state, f"{zip3}{rng.randint(0, 99):02d}"])
    out = ROOT / "samples" / "leads.csv"
    out.parent.mkdir(exist_ok=True)
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows)
    print(f"wrote {len(rows)} leads to {out}")


if __name__ == "__main__":
    main()
