"""Row outcomes have one definition of their bytes: the template fast path, and every prefix a
reader recognises them by, agree with the general canonical encoder."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import canonical
from ledger.core.outcomes import (
    ACCEPTED,
    ACCEPTED_TEMPLATE,
    COMMITTED_HASH_AT,
    COMMITTED_PREFIX,
    DUPLICATE_PREFIX,
    OUTCOMES,
    QUARANTINED_PREFIX,
    row_outcome,
)

HEX = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
ROWS = st.integers(min_value=0, max_value=2**63 - 1)
FIELDS = st.text(min_size=1, max_size=8)


def general(row: int, outcome: str, record_hash: str) -> bytes:
    return canonical.encode(
        {"v": 1, "type": "row_outcome", "row": row, "outcome": outcome, "record_hash": record_hash, "errors": []}
    )


@settings(max_examples=300, deadline=None)
@given(ROWS, st.sampled_from(ACCEPTED), HEX)
def test_fast_path_matches_the_canonical_encoder(row: int, outcome: str, record_hash: str) -> None:
    assert row_outcome(row=row, outcome=outcome, record_hash=record_hash) == general(row, outcome, record_hash)
    assert ACCEPTED_TEMPLATE % (outcome.encode(), record_hash.encode(), row) == general(row, outcome, record_hash)


def test_values_outside_the_template_take_the_general_path() -> None:
    upper = "AB" * 32  # not lowercase hex: still encoded canonically, as given
    assert row_outcome(row=1, outcome="committed", record_hash=upper) == general(1, "committed", upper)
    odd = 'quo"te'
    assert row_outcome(row=1, outcome="duplicate", record_hash=odd) == general(1, "duplicate", odd)


@settings(max_examples=200, deadline=None)
@given(ROWS, HEX, st.lists(st.tuples(FIELDS, FIELDS), min_size=1, max_size=3), st.lists(st.text(), max_size=3))
def test_each_outcome_is_recognised_by_its_prefix_alone(
    row: int, record_hash: str, errors: list[tuple[str, str]], cells: list[str]
) -> None:
    committed = row_outcome(row=row, outcome="committed", record_hash=record_hash)
    duplicate = row_outcome(row=row, outcome="duplicate", record_hash=record_hash)
    quarantined = row_outcome(row=row, outcome="quarantined", record_hash=None, errors=errors, cells=cells)
    prefixes = {COMMITTED_PREFIX: committed, DUPLICATE_PREFIX: duplicate, QUARANTINED_PREFIX: quarantined}
    for prefix, data in prefixes.items():
        assert [p for p in prefixes if data.startswith(p)] == [prefix]
    assert committed[COMMITTED_HASH_AT : COMMITTED_HASH_AT + 64] == record_hash.encode()


def test_accepted_outcomes_are_outcomes() -> None:
    assert set(ACCEPTED) < OUTCOMES and "quarantined" in OUTCOMES - set(ACCEPTED)
