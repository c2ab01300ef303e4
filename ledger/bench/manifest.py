"""Deterministic synthetic `lab-inventory` manifests for benchmarks and sample data.

About 1% of rows break a rule (a different rule in turn) and about 1% repeat an earlier row
exactly, so a run exercises validation, quarantine and in-manifest duplicates. The same
(rows, seed) always gives the same bytes.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

__all__ = ["HEADER", "generate_rows", "write_manifest"]

HEADER = "asset_id,grant_code,category,quantity,location,acquisition_date,cas_number,hazard_class,unit_cost,description"

_AGENCIES = ("NIH", "NSF", "DOE", "DOD", "EPA")
_BUILDINGS = ("CHM", "BIO", "PHY", "ENG", "MED")
_CHEMICALS = (  # (CAS, hazard) pairs whose check digits hold
    ("64-17-5", "flammable"),
    ("67-64-1", "flammable"),
    ("7647-01-0", "corrosive"),
    ("7732-18-5", "none"),
    ("7664-93-9", "corrosive"),
    ("1310-73-2", "corrosive"),
)
_BAD = (
    ("quantity", "-3"),
    ("quantity", "1.5"),
    ("acquisition_date", "2024-02-30"),
    ("grant_code", "XYZ-123"),
    ("location", "lab 5"),
    ("cas_number", "7732-18-4"),
    ("category", "gadget"),
    ("unit_cost", "12.345"),
)
_COLUMNS = HEADER.split(",")


def _row(i: int, rnd: random.Random) -> list[str]:
    category = ("equipment", "chemical", "biological", "radioactive", "consumable")[i % 5]
    cas, hazard = "", ""
    if category == "chemical":
        cas, hazard = _CHEMICALS[i % len(_CHEMICALS)]
    elif category == "biological":
        hazard = "biohazard"
    elif category == "radioactive":
        hazard = "radiation"
    return [
        f"AS-{i:08d}",
        f"{_AGENCIES[i % 5]}-R{rnd.randrange(10**6):06d}",
        category,
        str(rnd.randrange(1, 500)),
        f"{_BUILDINGS[rnd.randrange(5)]}-{rnd.randrange(100, 9999)}",
        f"20{rnd.randrange(15, 25)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}",
        cas,
        hazard,
        f"{rnd.randrange(0, 100000)}.{rnd.randrange(100):02d}",
        f"synthetic item {i}",
    ]


def generate_rows(rows: int, *, seed: int = 1) -> Iterator[list[str]]:
    rnd = random.Random(seed)
    previous: list[str] | None = None
    bad_kind = 0
    for i in range(rows):
        roll = rnd.random()
        if previous is not None and roll < 0.01:
            yield previous  # an exact repeat: a duplicate, not an error
            continue
        row = _row(i, rnd)
        if roll > 0.99:
            field, value = _BAD[bad_kind % len(_BAD)]
            bad_kind += 1
            row[_COLUMNS.index(field)] = value
        previous = row
        yield row


def _write(out: TextIO, rows: int, seed: int) -> None:
    out.write(HEADER + "\n")
    buffer: list[str] = []
    for row in generate_rows(rows, seed=seed):
        buffer.append(",".join(row))
        if len(buffer) == 10_000:
            out.write("\n".join(buffer) + "\n")
            buffer.clear()
    if buffer:
        out.write("\n".join(buffer) + "\n")


def write_manifest(path: Path, rows: int, *, seed: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as out:
        _write(out, rows, seed)
    return path
