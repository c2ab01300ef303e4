"""The one-pass stager (stage_copy) writes exactly the COPY bytes of the general path,
encode_copy(stage_chunk(...)), for any mix of valid, refused and broken rows."""

from __future__ import annotations

import uuid
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.bench.manifest import HEADER, generate_rows
from ledger.core.policy import load_policy
from ledger.ingest.csv_reader import Record, RecordError
from ledger.ingest.staged_rows import encode_copy, stage_chunk, stage_copy
from ledger.testing.policy_rows import bound_rows

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy((ROOT / "policies" / "lab-inventory.json").read_bytes(), source="lab-inventory.json")
IMPORT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
BROKEN = RecordError("malformed_record", "the record on line 3 is not valid CSV")


def _both(lab: str, records: list[Record], binding: object) -> None:
    general = stage_chunk(IMPORT_ID, lab, POLICY, binding, records)
    one_pass = stage_copy(IMPORT_ID, lab, POLICY, binding, records)
    assert one_pass.payload == encode_copy(general)
    assert one_pass.rows == len(records)
    assert one_pass.quarantined == sum(1 for row in general if row[6] is not None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(bound_rows(), st.integers(0, 30)), min_size=1, max_size=8),
    st.sampled_from(["chem-lab", "lab-ü", 'lab "q"']),
)
def test_one_pass_staging_writes_the_general_paths_bytes(
    rows: list[tuple[tuple[object, list[str]], int]], lab: str
) -> None:
    # One binding per chunk (a chunk comes from one header): the first row's.
    binding = rows[0][0][0]
    columns = len(rows[0][0][1])
    records = []
    for row_no, ((_, cells), roll) in enumerate(rows, start=1):
        cells = (cells + [""] * columns)[:columns] if roll else cells
        records.append(Record(row_no, cells, BROKEN if roll == 1 else None))
    _both(lab, records, binding)


def test_a_lone_surrogate_takes_the_general_path() -> None:
    """A JSON Lines manifest can carry a string the canonical encoder refuses: the one-pass
    path leaves it to the general one, which decides (here: both raise the same way)."""
    binding = POLICY.bind_header(HEADER.split(","))
    row = next(iter(generate_rows(1)))
    cells = list(row)
    cells[HEADER.split(",").index("description")] = "bad \ud800 text"
    rec = Record(1, cells)
    outcomes = []
    for fn in (stage_chunk, stage_copy):
        try:
            fn(IMPORT_ID, "chem-lab", POLICY, binding, [rec])
            outcomes.append("ok")
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]


def test_bench_rows_stage_alike() -> None:
    binding = POLICY.bind_header(HEADER.split(","))
    records = [Record(i, list(cells)) for i, cells in enumerate(generate_rows(2_000), start=1)]
    _both("chem-lab", records, binding)
