"""The asset record fast paths give exactly the general canonical encoder's bytes (row outcomes:
tests/core/test_outcomes.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core import canonical, records

SCALARS = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
)
KEYS = st.one_of(st.text(alphabet="abcdefghij_", min_size=1, max_size=8), st.text(min_size=1, max_size=3))


def _outcome(fn: object, *args: object) -> tuple[str, object]:
    try:
        return "ok", fn(*args)  # type: ignore[operator]
    except Exception as exc:  # the same refusal, of the same type
        return "error", type(exc)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(KEYS, SCALARS, max_size=6), st.text(max_size=8), st.text(max_size=8))
def test_asset_shape_fast_path_matches_the_canonical_encoder(data: dict[str, object], policy: str, lab: str) -> None:
    envelope = {"v": 1, "type": "asset", "policy": policy, "lab": lab}
    fast = _outcome(canonical.encode_asset_shape, envelope, data)
    general = _outcome(canonical.encode, {**envelope, "data": data})
    assert fast == general


def test_asset_shape_refuses_what_the_encoder_refuses() -> None:
    import pytest

    from ledger.core.errors import CanonicalError

    for bad in ({"a": "x\ud800"}, {"a": 2**63}, {"é": "x"}, {"a": 1.5}):
        with pytest.raises(CanonicalError):
            canonical.encode_asset_shape({"v": 1}, bad)  # type: ignore[arg-type]


# What the valid-row fast path hands the encoder: field-name keys, strings (a lone surrogate
# included: a JSON Lines manifest can carry one), integers of at most 18 digits.
FAST_VALUES = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1),
)
FIELD_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(FIELD_NAMES, FAST_VALUES, max_size=8), st.text(max_size=8), st.text(max_size=8))
def test_asset_record_encoder_gives_asset_record_bytes_or_defers(
    data: dict[str, str | int], policy: str, lab: str
) -> None:
    fast = records.asset_record_encoder(policy=policy, lab=lab)(data)
    general = _outcome(lambda: records.asset_record(policy=policy, lab=lab, data=data))
    if fast is None:
        # Only what the general path refuses (with its reason) is left to it.
        assert general[0] == "error"
    else:
        assert general == ("ok", fast)
