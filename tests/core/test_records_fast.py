"""The template fast path of row_outcome gives exactly the general canonical encoder's bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import canonical, records

HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)


def general(row: int, outcome: str, record_hash: str) -> bytes:
    return canonical.encode(
        {"v": 1, "type": "row_outcome", "row": row, "outcome": outcome, "record_hash": record_hash, "errors": []}
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**63 - 1), st.sampled_from(["committed", "duplicate"]), HEX)
def test_fast_path_matches_the_canonical_encoder(row: int, outcome: str, record_hash: str) -> None:
    assert records.row_outcome(row=row, outcome=outcome, record_hash=record_hash) == general(row, outcome, record_hash)


def test_values_outside_the_template_take_the_general_path() -> None:
    upper = "AB" * 32  # not lowercase hex: still encoded canonically, as given
    assert records.row_outcome(row=1, outcome="committed", record_hash=upper) == general(1, "committed", upper)
    odd = 'quo"te'
    assert records.row_outcome(row=1, outcome="duplicate", record_hash=odd) == general(1, "duplicate", odd)
