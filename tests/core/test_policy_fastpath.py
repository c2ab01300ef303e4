"""The compiled valid-row fast path gives the general validator's answer on every row: the
same data and key for a valid row, and None exactly when the validator reports a violation."""

from __future__ import annotations

from hypothesis import given, settings

from ledger.bench.manifest import HEADER, generate_rows
from ledger.core.policy import Binding, rules
from ledger.core.policy import fastpath as fp
from ledger.testing.policy_rows import POLICY, bound_rows


def _agree(binding: Binding, cells: list[str]) -> None:
    fast = binding.fast(cells)
    result = binding.validate(cells)
    if result.errors:
        assert fast is None, (cells, result.errors)
    else:
        assert fast == (result.data, result.key), cells


@settings(max_examples=3000, deadline=None)
@given(bound_rows())
def test_the_fast_path_agrees_with_the_validator(row: tuple[Binding, list[str]]) -> None:
    _agree(*row)


def test_the_fast_path_agrees_on_the_benchmark_manifest() -> None:
    binding = POLICY.bind_header(HEADER.split(","))
    fast_rows = 0
    for row in generate_rows(5_000, seed=3):
        _agree(binding, list(row))
        fast_rows += binding.fast(list(row)) is not None
    assert fast_rows > 4_800  # the manifest is ~99% valid: the fast path takes those


def test_the_fast_path_shapes_are_the_validators() -> None:
    for name in ("_INTEGER", "_NUMBER", "_DATE"):
        assert getattr(fp, name).pattern == getattr(rules, name).pattern
