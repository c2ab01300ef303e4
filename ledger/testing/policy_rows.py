"""A Hypothesis strategy of rows bound to the lab-inventory policy: mostly valid, with a few
cells replaced by anything at all, for property tests that hold two ways of validating or
staging a row to the same answer (the fast path against the validator, the one-pass stager
against the general one).
"""

from __future__ import annotations

from hypothesis import strategies as st

from ledger.core.policy import Binding, Policy, load_policy
from ledger.testing.checkout import POLICIES_DIR

__all__ = ["OPTIONAL", "POLICY", "REQUIRED", "SAMPLES", "VALID", "bound_rows"]

# The policy the rows are bound to.
POLICY: Policy = load_policy((POLICIES_DIR / "lab-inventory.json").read_bytes(), source="lab-inventory.json")
# Its required and optional columns.
REQUIRED = ["asset_id", "grant_code", "category", "quantity", "location", "acquisition_date"]
OPTIONAL = ["cas_number", "hazard_class", "unit_cost", "description"]

# Per field: values that pass, values that break one rule or another, and edge shapes.
SAMPLES: dict[str, list[str]] = {
    "asset_id": ["EQ-0001", "eq-0001", " EQ-0001 ", "", "E", "EQ_1", "-EQ1", "A" * 64, "A" * 65, "ÉQ-1"],
    "grant_code": ["NIH-R01GM1", "nih-r01gm1", "NSF-1", "NSF-12", "XYZ-123", "NIH-", "DOE-AB-CD", "EPA-" + "A" * 32],
    "category": ["equipment", "Chemical", " biological ", "radioactive", "consumable", "tools", ""],
    "quantity": ["0", "2", "-1", "007", "1.5", "x", "9" * 18, "9" * 19, "-0", ""],
    "location": ["CHM-204", "bio-1120-b", "CHM-20", "CHM-20400", "CHM-204-ABCDE", ""],
    "acquisition_date": ["2024-01-15", "2024-02-30", "2024-1-5", "0000-01-01", "2024-13-01", "15/01/2024", ""],
    "cas_number": ["", "7732-18-5", "7732-18-4", "64-17-5", "1-11-1", "abc"],
    "hazard_class": ["", "flammable", "TOXIC", "none", "spicy"],
    "unit_cost": ["", "10", "10.5", "10.50", "10.505", "-0.00", "-1", "0", "1e3", "00012.1", "9" * 16],
    "description": ["", "Centrifuge", "x" * 500, "x" * 501, "  padded  "],
}


# Values that pass on their own (cas_number and hazard_class are then required for chemicals).
VALID: dict[str, list[str]] = {
    "asset_id": ["EQ-0001", "eq-0001", " EQ-0001 "],
    "grant_code": ["NIH-R01GM1", "nih-r01gm1", "NSF-12"],
    "category": ["equipment", "Chemical", " biological ", "consumable"],
    "quantity": ["0", "2", "007", "-0"],
    "location": ["CHM-204", "bio-1120-b"],
    "acquisition_date": ["2024-01-15", "2000-02-29"],
    "cas_number": ["", "7732-18-5", "64-17-5"],
    "hazard_class": ["", "flammable", "TOXIC", "none"],
    "unit_cost": ["", "10", "10.5", "-0.00", "0", "00012.1"],
    "description": ["", "Centrifuge", "x" * 500],
}


def _cell(field: str) -> st.SearchStrategy[str]:
    """A value for ``field``: one of its SAMPLES, or any short text."""
    return st.one_of(st.sampled_from(SAMPLES[field]), st.text(max_size=12))


@st.composite
def bound_rows(draw: st.DrawFn) -> tuple[Binding, list[str]]:
    """A row of passing values with none, one or a few cells replaced by anything at all."""
    optional = draw(st.lists(st.sampled_from(OPTIONAL), unique=True))
    columns = draw(st.permutations([*REQUIRED, *optional]))
    binding = POLICY.bind_header(columns)
    cells = [draw(st.sampled_from(VALID[c])) for c in columns]
    for position in draw(st.lists(st.integers(0, len(columns) - 1), max_size=3)):
        cells[position] = draw(_cell(columns[position]))
    if draw(st.integers(0, 20)) == 0:  # now and then, a row of the wrong length
        cells = cells[:-1] if draw(st.booleans()) else [*cells, ""]
    return binding, cells
