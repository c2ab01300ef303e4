"""Every rule of the reference policy (shared/reference-policy.md): a value that passes, one
that breaks it, several broken at once, and properties that must hold for any input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.core.policy import Binding, load_policy

ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy((ROOT / "policies" / "lab-inventory.json").read_bytes(), source="lab-inventory.json")
COLUMNS = [
    "asset_id",
    "grant_code",
    "category",
    "quantity",
    "location",
    "acquisition_date",
    "cas_number",
    "hazard_class",
    "unit_cost",
    "description",
]
BINDING: Binding = POLICY.bind_header(COLUMNS)
BASE = {
    "asset_id": "EQ-0001",
    "grant_code": "NIH-R01GM1",
    "category": "equipment",
    "quantity": "2",
    "location": "CHM-204",
    "acquisition_date": "2024-01-15",
    "cas_number": "",
    "hazard_class": "",
    "unit_cost": "10.00",
    "description": "Centrifuge",
}
CHEMICAL = {**BASE, "category": "chemical", "cas_number": "7732-18-5", "hazard_class": "none"}


def validate(row: dict[str, str]):  # type: ignore[no-untyped-def]
    return BINDING.validate([row[c] for c in COLUMNS])


def rules(row: dict[str, str]) -> set[tuple[str, str]]:
    return {(v.field, v.rule) for v in validate(row).errors}


# (field, value that passes, normalised result)
PASSING = [
    ("asset_id", "eq-0001", "EQ-0001"),
    ("asset_id", " A1B ", "A1B"),
    ("asset_id", "X" * 64, "X" * 64),
    ("grant_code", "nsf-che2201234", "NSF-CHE2201234"),
    ("grant_code", "DOE-SC0012345", "DOE-SC0012345"),
    ("grant_code", "DoD-W911NF-24-1", "DOD-W911NF-24-1"),
    ("grant_code", "EPA-R8", "EPA-R8"),
    ("category", "Equipment", "equipment"),
    ("category", "CONSUMABLE", "consumable"),
    ("quantity", "12", 12),
    ("quantity", "0", 0),
    ("quantity", " 007 ", 7),
    ("location", "chm-204", "CHM-204"),
    ("location", "BIO-1120-B", "BIO-1120-B"),
    ("location", "phy-3010-ab12", "PHY-3010-AB12"),
    ("acquisition_date", "2024-02-29", "2024-02-29"),
    ("acquisition_date", " 2023-12-31 ", "2023-12-31"),
    ("unit_cost", "12.5", "12.50"),
    ("unit_cost", "3", "3.00"),
    ("unit_cost", "0.99", "0.99"),
    ("unit_cost", "0", "0.00"),
    ("description", "x" * 500, "x" * 500),
    ("description", "  Ethanol, 4 L ", "Ethanol, 4 L"),
]

# (field, value that breaks a rule, the rule)
FAILING = [
    ("asset_id", "", "required"),
    ("asset_id", "AB", "pattern"),
    ("asset_id", "-ABC", "pattern"),
    ("asset_id", "AB C", "pattern"),
    ("asset_id", "X" * 65, "pattern"),
    ("grant_code", "", "required"),
    ("grant_code", "ABC-123", "prefix"),
    ("grant_code", "NIH123", "prefix"),
    ("grant_code", "NIH-", "pattern"),
    ("grant_code", "NIH-A", "pattern"),
    ("grant_code", "NIH-A B", "pattern"),
    ("category", "", "required"),
    ("category", "gadget", "enum"),
    ("quantity", "", "required"),
    ("quantity", "-3", "minimum"),
    ("quantity", "1.5", "integer"),
    ("quantity", "12 kg", "integer"),
    ("quantity", "1e3", "integer"),
    ("quantity", "1,200", "integer"),
    ("quantity", "+5", "integer"),
    ("quantity", "9" * 40, "integer"),
    ("location", "", "required"),
    ("location", "lab 5", "pattern"),
    ("location", "CH-204", "pattern"),
    ("location", "CHM-20", "pattern"),
    ("location", "CHM-204-ABCDE", "pattern"),
    ("acquisition_date", "", "required"),
    ("acquisition_date", "2024-02-30", "date"),
    ("acquisition_date", "2023-02-29", "date"),
    ("acquisition_date", "15/01/2024", "date"),
    ("acquisition_date", "2024-1-5", "date"),
    ("unit_cost", "-1", "minimum"),
    ("unit_cost", "12.345", "decimal_places"),
    ("unit_cost", "abc", "number"),
    ("unit_cost", "1e3", "number"),
    ("unit_cost", "1,000.00", "number"),
    ("description", "x" * 501, "max_length"),
]


@pytest.mark.parametrize(("field", "value", "normalised"), PASSING)
def test_value_passes_and_is_normalised(field: str, value: str, normalised: object) -> None:
    result = validate({**BASE, field: value})
    assert result.errors == []
    assert result.data is not None and result.data[field] == normalised


@pytest.mark.parametrize(("field", "value", "rule"), FAILING)
def test_value_breaks_its_rule(field: str, value: str, rule: str) -> None:
    result = validate({**BASE, field: value})
    assert result.data is None and result.key is None
    assert (field, rule) in rules({**BASE, field: value})
    for violation in result.errors:
        assert violation.message  # every error says what is wrong in words


def test_cas_number_passes_with_a_holding_check_digit() -> None:
    for cas in ("7732-18-5", "64-17-5", "67-64-1", "7647-01-0", "7664-93-9"):
        assert validate({**CHEMICAL, "cas_number": cas}).errors == []


@pytest.mark.parametrize(
    ("value", "rule"),
    [("7732-18-4", "check_digit"), ("7732-185", "pattern"), ("1-18-5", "pattern"), ("12345678-12-1", "pattern")],
)
def test_cas_number_breaks(value: str, rule: str) -> None:
    found = rules({**CHEMICAL, "cas_number": value})
    assert found == {("cas_number", rule)}  # a malformed number is not also a check-digit failure


def test_cas_number_is_required_for_chemicals_only() -> None:
    assert rules({**CHEMICAL, "cas_number": ""}) == {("cas_number", "required_when")}
    assert validate({**BASE, "cas_number": ""}).errors == []
    # Given where not required, it is still checked.
    assert rules({**BASE, "cas_number": "7732-18-4"}) == {("cas_number", "check_digit")}


@pytest.mark.parametrize("category", ["chemical", "biological", "radioactive"])
def test_hazard_class_is_required_for_hazardous_categories(category: str) -> None:
    row = {**CHEMICAL, "category": category, "hazard_class": ""}
    assert ("hazard_class", "required_when") in rules(row)


@pytest.mark.parametrize("category", ["equipment", "consumable"])
def test_hazard_class_is_optional_otherwise(category: str) -> None:
    assert validate({**BASE, "category": category, "hazard_class": ""}).errors == []


def test_hazard_class_values() -> None:
    assert validate({**CHEMICAL, "hazard_class": "Compressed_Gas"}).data["hazard_class"] == "compressed_gas"  # type: ignore[index]
    assert rules({**CHEMICAL, "hazard_class": "spicy"}) == {("hazard_class", "enum")}


def test_conditional_rules_are_not_judged_on_an_invalid_category() -> None:
    assert rules({**BASE, "category": "chem"}) == {("category", "enum")}


def test_optional_fields_may_be_empty_and_are_then_absent() -> None:
    result = validate({**BASE, "unit_cost": "", "description": ""})
    assert result.errors == [] and result.data is not None
    assert "unit_cost" not in result.data and "description" not in result.data


def test_every_broken_rule_of_a_row_is_reported_in_field_order() -> None:
    row = {
        "asset_id": "x",
        "grant_code": "xyz-1",
        "category": "chemical",
        "quantity": "-3",
        "location": "lab 5",
        "acquisition_date": "2024-02-30",
        "cas_number": "7732-18-4",
        "hazard_class": "",
        "unit_cost": "12.345",
        "description": "y" * 501,
    }
    result = validate(row)
    found = [(v.field, v.rule) for v in result.errors]
    assert found == [
        ("asset_id", "pattern"),
        ("grant_code", "prefix"),
        ("grant_code", "pattern"),
        ("quantity", "minimum"),
        ("location", "pattern"),
        ("acquisition_date", "date"),
        ("cas_number", "check_digit"),
        ("hazard_class", "required_when"),
        ("unit_cost", "decimal_places"),
        ("description", "max_length"),
    ]


@pytest.mark.parametrize("cells", [[], ["EQ-1"], [*BASE.values(), "extra"]])
def test_wrong_cell_count_is_one_row_violation(cells: list[str]) -> None:
    result = BINDING.validate(cells)
    assert [(v.field, v.rule) for v in result.errors] == [("row", "cell_count")]
    assert f"expected {len(COLUMNS)} cells, found {len(cells)}" in result.errors[0].message


def test_key_is_the_normalised_primary_key() -> None:
    assert validate({**BASE, "asset_id": "eq-9", "grant_code": "nih-x1"}).key == ("EQ-9", "NIH-X1")


def test_long_values_are_cut_in_messages() -> None:
    message = validate({**BASE, "location": "Z" * 10_000}).errors[0].message
    assert len(message) < 300


CELL = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(CELL, min_size=len(COLUMNS), max_size=len(COLUMNS)))
def test_any_row_gives_data_or_violations_never_an_exception(cells: list[str]) -> None:
    result = BINDING.validate(cells)
    assert (result.data is None) == bool(result.errors)
    assert all(v.field in (*COLUMNS, "row") and v.rule and v.message for v in result.errors)


@settings(max_examples=200, deadline=None)
@given(
    asset=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{2,20}", fullmatch=True),
    quantity=st.integers(min_value=0, max_value=10**9),
    cost=st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False, allow_infinity=False),
    pad=st.sampled_from(["", " ", "  \t"]),
)
def test_normalisation_is_idempotent(asset: str, quantity: int, cost: object, pad: str) -> None:
    row = {**BASE, "asset_id": pad + asset + pad, "quantity": str(quantity), "unit_cost": str(cost)}
    first = validate(row)
    assert first.data is not None, first.errors
    again = validate({c: str(first.data.get(c, "")) for c in COLUMNS})
    assert again.data == first.data


def _cas(body: str) -> str:
    digits = body.replace("-", "")
    check = sum(w * int(d) for w, d in enumerate(reversed(digits), start=1)) % 10
    return f"{body}-{check}"


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"[0-9]{2,7}-[0-9]{2}", fullmatch=True), st.integers(min_value=1, max_value=9))
def test_generated_cas_numbers_pass_and_a_changed_check_digit_fails(body: str, shift: int) -> None:
    good = _cas(body)
    assert validate({**CHEMICAL, "cas_number": good}).errors == []
    bad = good[:-1] + str((int(good[-1]) + shift) % 10)
    assert rules({**CHEMICAL, "cas_number": bad}) == {("cas_number", "check_digit")}
