"""The code reproduces tests/vectors/audit.json and fails every broken variant with the
check the vector names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.core.bundle import verify_bundle
from ledger.core.checkpoint import parse_body
from ledger.core.failures import VerificationError
from ledger.core.merkle import root
from ledger.core.note import Signer, Verifier, open_note
from ledger.core.proofs import (
    ConsistencyProof,
    EntryProof,
    ReceiptProof,
    read_checkpoint,
    tree_leaf,
    verify_consistency_proof,
    verify_entry_proof,
    verify_receipt_proof,
)
from ledger.core.records import BatchHeader

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "audit.json").read_text(encoding="utf-8"))
KEY = Verifier.parse(VECTORS["key"]["verifier_key"])


def _check(run: Any) -> str | None:
    try:
        run()
    except VerificationError as exc:
        return exc.check
    return None


def test_generator_reproduces_the_committed_file() -> None:
    from tests.vectors.audit_ledger import audit_vectors

    assert audit_vectors() == VECTORS


def test_fixed_key() -> None:
    k = VECTORS["key"]
    signer = Signer(k["name"], bytes.fromhex(k["seed"]))
    assert signer.encode() == k["signer_key"] and signer.verifier.encode() == k["verifier_key"]
    assert signer.key_id.hex() == k["key_id"] and signer.verifier.public_key.hex() == k["public_key"]


def test_tree_leaves_and_roots() -> None:
    ledger = VECTORS["ledger"]
    leaves = [tree_leaf(msgspec.convert(b["header"], BatchHeader)) for b in ledger["batches"]]
    assert [leaf.hex() for leaf in leaves] == ledger["tree_leaves"]
    for r in ledger["tree_roots"]:
        assert root(leaves[: r["size"]]).hex() == r["root"]


@pytest.mark.parametrize("v", VECTORS["notes"], ids=lambda v: v["name"])
def test_notes(v: dict[str, Any]) -> None:
    keys = [Verifier.parse(k) for k in v["verifier_keys"]]
    assert _check(lambda: open_note(v["note"], keys)) == v["want_error"]


@pytest.mark.parametrize("v", VECTORS["checkpoints"], ids=lambda v: v["name"])
def test_checkpoint_bodies(v: dict[str, Any]) -> None:
    assert _check(lambda: parse_body(v["body"])) == v["want_error"]
    if v["want"] is not None:
        cp = parse_body(v["body"])
        assert {"origin": cp.origin, "size": cp.size, "root": cp.root.hex()} == v["want"]


@pytest.mark.parametrize("v", VECTORS["entry_proofs"], ids=lambda v: v["name"])
def test_entry_proofs(v: dict[str, Any]) -> None:
    assert _check(lambda: verify_entry_proof(msgspec.convert(v["proof"], EntryProof), [KEY])) == v["want_error"]


@pytest.mark.parametrize("v", VECTORS["receipt_proofs"], ids=lambda v: v["name"])
def test_receipt_proofs(v: dict[str, Any]) -> None:
    proof = msgspec.convert(v["proof"], ReceiptProof)
    manifest = [bytes.fromhex(v["manifest_hex"])]
    assert _check(lambda: verify_receipt_proof(proof, [KEY], manifest=manifest)) == v["want_error"]


@pytest.mark.parametrize("v", VECTORS["consistency_proofs"], ids=lambda v: v["name"])
def test_consistency_proofs(v: dict[str, Any]) -> None:
    proof = msgspec.convert(v["proof"], ConsistencyProof)
    check = _check(lambda: verify_consistency_proof(v["old_checkpoint"], v["new_checkpoint"], proof, [KEY]))
    assert check == v["want_error"]


@pytest.mark.parametrize("v", VECTORS["bundles"], ids=lambda v: v["name"])
def test_bundles(v: dict[str, Any]) -> None:
    olds = [read_checkpoint(o, [KEY]) for o in v["old_checkpoints"]]
    lines = [line.encode() for line in v["lines"]]
    assert _check(lambda: verify_bundle(lines, [KEY], old_checkpoints=olds)) == v["want_error"]


def test_every_family_has_valid_and_broken_vectors() -> None:
    for family in ("notes", "checkpoints", "entry_proofs", "receipt_proofs", "consistency_proofs", "bundles"):
        errors = [v["want_error"] for v in VECTORS[family]]
        assert None in errors and any(e is not None for e in errors), family
