"""A policy file is checked at load; a malformed one is refused with the problem named."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.core.policy import (
    MissingColumnsError,
    PolicyError,
    SchemaDriftError,
    load_policy,
    normalise_header,
)

ROOT = Path(__file__).resolve().parents[2]
RAW = (ROOT / "policies" / "lab-inventory.json").read_bytes()
DESCRIPTOR: dict[str, Any] = json.loads(RAW)


def test_shipped_policy_loads_and_its_sha256_is_the_files() -> None:
    policy = load_policy(RAW, source="lab-inventory.json")
    assert (policy.name, policy.version) == ("lab-inventory", "1")
    assert policy.sha256 == hashlib.sha256(RAW).hexdigest()
    assert policy.key_fields == ("asset_id", "grant_code")
    assert policy.required_columns == ("asset_id", "grant_code", "category", "quantity", "location", "acquisition_date")
    assert policy.descriptor["fields"][0]["name"] == "asset_id"


def _broken(mutate: Any) -> bytes:
    descriptor = copy.deepcopy(DESCRIPTOR)
    mutate(descriptor)
    return json.dumps(descriptor).encode()


def _field(name: str) -> Any:
    return lambda d: next(f for f in d["fields"] if f["name"] == name)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("name"), "name"),
        (lambda d: d.update(version=""), "version"),
        (lambda d: d.update(fields=[]), "fields"),
        (
            lambda d: _field("location")(d)["constraints"].update(pattern="([A-Z"),
            "fields[4] (location).constraints.pattern: is not a valid regular expression",
        ),
        (lambda d: _field("quantity")(d).update(type="bignum"), "unsupported type 'bignum'"),
        (lambda d: d.update(primaryKey=["asset_id", "serial"]), "primaryKey: names unknown field 'serial'"),
        (
            lambda d: _field("cas_number")(d)["x-ledger-required-when"].update(field="kind"),
            "refers to unknown field 'kind'",
        ),
        (lambda d: d["fields"].append({"name": "asset_id"}), "duplicate field names: asset_id"),
        (
            lambda d: _field("cas_number")(d).update({"x-ledger-check-digits": "cas"}),
            "x-ledger-check-digits: unknown extension",
        ),
        (lambda d: _field("cas_number")(d).update({"x-ledger-check-digit": "luhn"}), "unknown algorithm"),
        (lambda d: _field("unit_cost")(d).pop("x-ledger-decimal-places"), "x-ledger-decimal-places"),
        (lambda d: _field("category")(d)["constraints"].update(enum=[]), "constraints.enum"),
        (lambda d: _field("description")(d)["constraints"].update(maxLength=0), "maxLength"),
        (
            lambda d: _field("description")(d)["constraints"].update(unique=True),
            "constraints.unique: unsupported constraint",
        ),
        (lambda d: d.update({"x-ledger-unknown-columns": "ignore"}), "x-ledger-unknown-columns"),
    ],
)
def test_malformed_policy_is_refused_naming_the_problem(mutate: Any, expected: str) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(_broken(mutate), source="policies/broken.json")
    assert "policies/broken.json" in str(error.value)
    assert expected in str(error.value)


def test_invalid_json_names_line_and_column() -> None:
    with pytest.raises(PolicyError, match=r"invalid JSON at line 2 column"):
        load_policy(b'{"name": "x",\n "version": }', source="p.json")


@pytest.mark.parametrize(
    ("cell", "name"),
    [
        ("Asset ID", "asset_id"),
        (" asset-id ", "asset_id"),
        ("ASSET_ID", "asset_id"),
        ("\ufeffasset_id", "asset_id"),
        ("Acquisition.Date", "acquisition_date"),
        ("grant -- code", "grant_code"),
    ],
)
def test_header_cells_are_normalised(cell: str, name: str) -> None:
    assert normalise_header(cell) == name


def test_unknown_columns_are_schema_drift_with_unknown_and_missing_named() -> None:
    policy = load_policy(RAW, source="p")
    with pytest.raises(SchemaDriftError) as error:
        policy.bind_header(["asset_id", "grant_code", "colour", "quantity"])
    assert error.value.unknown_columns == ("colour",)
    assert error.value.missing_columns == ("category", "location", "acquisition_date")
    assert error.value.code == "schema_drift"


def test_a_column_given_twice_is_schema_drift() -> None:
    policy = load_policy(RAW, source="p")
    header = ["asset_id", "Asset ID", "grant_code", "category", "quantity", "location", "acquisition_date"]
    with pytest.raises(SchemaDriftError) as error:
        policy.bind_header(header)
    assert error.value.duplicate_columns == ("asset_id",)


def test_missing_required_columns_only() -> None:
    policy = load_policy(RAW, source="p")
    with pytest.raises(MissingColumnsError) as error:
        policy.bind_header(["asset_id", "grant_code", "category"])
    assert error.value.missing_columns == ("quantity", "location", "acquisition_date")
    assert error.value.code == "missing_columns"


def test_optional_columns_may_be_left_out_of_the_header() -> None:
    policy = load_policy(RAW, source="p")
    binding = policy.bind_header(["grant_code", "asset_id", "category", "quantity", "location", "acquisition_date"])
    result = binding.validate(["NIH-X1", "EQ-1", "chemical", "1", "CHM-204", "2024-01-01"])
    # Conditional columns absent from the header are empty: a chemical still needs them.
    assert {(v.field, v.rule) for v in result.errors} == {
        ("cas_number", "required_when"),
        ("hazard_class", "required_when"),
    }


def test_header_aliases_resolve_to_their_field() -> None:
    descriptor = copy.deepcopy(DESCRIPTOR)
    next(f for f in descriptor["fields"] if f["name"] == "asset_id")["x-ledger-aliases"] = ["Asset Tag"]
    policy = load_policy(json.dumps(descriptor).encode(), source="p")
    binding = policy.bind_header(["asset-tag", "grant_code", "category", "quantity", "location", "acquisition_date"])
    assert binding.columns[0] == "asset_id"
