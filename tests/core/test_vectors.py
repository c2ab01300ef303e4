"""The code reproduces the committed vectors byte for byte (a hashed-byte change fails here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ledger.core import canonical, records
from ledger.core.errors import LedgerFormatError, ProofError
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import root, verify_consistency, verify_inclusion
from ledger.core.outcomes import row_outcome
from ledger.core.verify import verify_batches
from tests.vectors.generate import to_stored

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("vector", load("canonical.json"), ids=lambda v: v["name"])
def test_canonical(vector: dict[str, Any]) -> None:
    assert canonical.encode(vector["value"]).hex() == vector["canonical_hex"]


def test_records() -> None:
    by_name = {v["name"]: v for v in load("records.json")}
    asset = by_name["asset"]
    data = records.asset_record(**asset["input"])
    assert data.hex() == asset["canonical_hex"] and leaf_hash(data).hex() == asset["leaf_hash"]
    for outcome in ("committed", "duplicate", "quarantined"):
        v = by_name[f"row_outcome {outcome}"]
        i = v["input"]
        data = row_outcome(
            row=i["row"],
            outcome=i["outcome"],
            record_hash=i["record_hash"],
            errors=[tuple(e) for e in i["errors"]],
            cells=i["cells"],
        )
        assert data.hex() == v["canonical_hex"] and leaf_hash(data).hex() == v["leaf_hash"]
    v = by_name["receipt"]
    data = records.receipt_record(**{**v["input"], "batches": [tuple(b) for b in v["input"]["batches"]]})
    assert data.hex() == v["canonical_hex"]
    v = by_name["batch header"]
    header = records.encode_header(records.BatchHeader(**v["input"]))
    assert header.hex() == v["canonical_hex"]
    assert records.chain_hash(bytes.fromhex(v["prev_chain_hash"]), header).hex() == v["chain_hash"]


def test_merkle_trees() -> None:
    for tree in load("merkle.json")["trees"]:
        leaves = [leaf_hash(bytes.fromhex(d)) for d in tree["leaf_data_hex"]]
        assert root(leaves).hex() == tree["root"], tree["size"]


@pytest.mark.parametrize("vector", load("merkle.json")["inclusion"], ids=lambda v: v["name"])
def test_inclusion(vector: dict[str, Any]) -> None:
    args = (
        vector["index"],
        vector["size"],
        bytes.fromhex(vector["leaf_hash"]),
        [bytes.fromhex(p) for p in vector["proof"]],
        bytes.fromhex(vector["root"]),
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("vector", load("merkle.json")["consistency"], ids=lambda v: v["name"])
def test_consistency(vector: dict[str, Any]) -> None:
    args = (
        vector["old_size"],
        vector["new_size"],
        bytes.fromhex(vector["old_root"]),
        bytes.fromhex(vector["new_root"]),
        [bytes.fromhex(p) for p in vector["proof"]],
    )
    if vector["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_chain_verifies() -> None:
    report = verify_batches(to_stored(load("chain.json")["ledger"]))
    assert report.ok and report.batches_checked == 3 and report.records_checked == 4


@pytest.mark.parametrize("vector", load("chain.json")["tampered"], ids=lambda v: v["name"])
def test_tampered_chain_is_rejected_where_the_vector_says(vector: dict[str, Any]) -> None:
    failure = verify_batches(to_stored(vector["batches"])).first_failure
    assert failure is not None
    assert {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason} == vector["want_failure"]


def test_generator_reproduces_the_committed_files() -> None:
    from tests.vectors import generate

    assert generate.canonical_vectors() == load("canonical.json")
    assert generate.record_vectors() == load("records.json")
    assert generate.merkle_vectors() == load("merkle.json")
    assert generate.chain_vectors() == load("chain.json")


# Review entries (§4.4) and the chain rules for corrections and reviews (§6.1).


@pytest.mark.parametrize("vector", load("review.json")["records"], ids=lambda v: v["name"])
def test_review_records(vector: dict[str, Any]) -> None:
    from tests.vectors.generate import review_bytes

    data = review_bytes(vector["input"])
    assert data.hex() == vector["canonical_hex"] and leaf_hash(data).hex() == vector["leaf_hash"]


def test_review_chain_verifies() -> None:
    report = verify_batches(to_stored(load("review.json")["ledger"]))
    assert report.ok and report.batches_checked == 6 and report.records_checked == 10


@pytest.mark.parametrize("vector", load("review.json")["tampered"], ids=lambda v: v["name"])
def test_tampered_review_chain_is_rejected_where_the_vector_says(vector: dict[str, Any]) -> None:
    failure = verify_batches(to_stored(vector["batches"])).first_failure
    assert failure is not None
    assert {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason} == vector["want_failure"]


def test_generator_reproduces_the_review_vectors() -> None:
    from tests.vectors import generate

    assert generate.review_vectors() == load("review.json")


# Transfers of an asset key between labs (document revision 3).


@pytest.mark.parametrize("vector", load("transfer.json")["records"], ids=lambda v: v["name"])
def test_transfer_records(vector: dict[str, Any]) -> None:
    from tests.vectors.generate import review_bytes

    data = review_bytes(vector["input"])
    assert data.hex() == vector["canonical_hex"] and leaf_hash(data).hex() == vector["leaf_hash"]


def test_transfer_chain_verifies() -> None:
    report = verify_batches(to_stored(load("transfer.json")["ledger"]))
    assert report.ok and report.batches_checked == 5


@pytest.mark.parametrize("vector", load("transfer.json")["tampered"], ids=lambda v: v["name"])
def test_tampered_transfer_chain_is_rejected_where_the_vector_says(vector: dict[str, Any]) -> None:
    failure = verify_batches(to_stored(vector["batches"])).first_failure
    assert failure is not None
    assert {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason} == vector["want_failure"]


def test_generator_reproduces_the_transfer_vectors() -> None:
    from tests.vectors import generate

    assert generate.transfer_vectors() == load("transfer.json")


# Revision 5: receipts of connectors' syncs (§4.3 ``source``).


@pytest.mark.parametrize("vector", load("connectors.json")["records"], ids=lambda v: v["name"])
def test_connector_receipts(vector: dict[str, Any]) -> None:
    i = vector["input"]
    fields = {k: v for k, v in i.items() if k not in ("source", "batches")}
    data = records.receipt_record(**fields, batches=[tuple(b) for b in i["batches"]], source=i["source"])
    assert data.hex() == vector["canonical_hex"] and leaf_hash(data).hex() == vector["leaf_hash"]
    parsed = records.parse_receipt(data)
    assert parsed.source is not None and parsed.source.connector == i["source"]["connector"]


def test_a_receipt_without_source_keeps_its_revision_1_bytes() -> None:
    plain = load("connectors.json")["without_source"]
    assert b'"source"' not in bytes.fromhex(plain["canonical_hex"])
    assert records.parse_receipt(bytes.fromhex(plain["canonical_hex"])).source is None


@pytest.mark.parametrize("vector", load("connectors.json")["malformed"], ids=lambda v: v["name"])
def test_malformed_sources_are_rejected(vector: dict[str, Any]) -> None:
    with pytest.raises(LedgerFormatError):
        records.parse_receipt(bytes.fromhex(vector["canonical_hex"]))


def test_generator_reproduces_the_connector_vectors() -> None:
    from tests.vectors import generate

    assert generate.connector_vectors() == load("connectors.json")
