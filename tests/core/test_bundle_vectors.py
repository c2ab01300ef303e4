"""The code reproduces tests/vectors/bundles.json (document revision 4): bundles with
corrections, reviews and transfers fail with the §6.1 check at the batch and entry the vector
names, partial bundles and kept checkpoints behave as §12 says, and the service's stored tree
state is held to the batch headers as §6.2 says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.core.bundle import verify_bundle
from ledger.core.failures import VerificationError
from ledger.core.hashing import leaf_hash
from ledger.core.note import Verifier
from ledger.core.proofs import read_checkpoint
from ledger.core.records import BatchHeader
from ledger.core.stored_tree import StoredCheckpointState, TreeCheck
from ledger.core.verify import StoredBatch, StoredEntry, verify_batches

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "bundles.json").read_text(encoding="utf-8"))
AUDIT = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "audit.json").read_text(encoding="utf-8"))
KEY = Verifier.parse(AUDIT["key"]["verifier_key"])


def test_generator_reproduces_the_committed_file() -> None:
    from tests.vectors.audit_ledger import bundle_vectors

    assert bundle_vectors() == VECTORS


@pytest.mark.parametrize("v", VECTORS["bundles"], ids=lambda v: v["name"])
def test_bundles(v: dict[str, Any]) -> None:
    failure = None
    try:
        verify_bundle(
            [line.encode() for line in v["lines"]],
            [KEY],
            old_checkpoints=[read_checkpoint(o, [KEY]) for o in v["old_checkpoints"]],
        )
    except VerificationError as exc:
        failure = {"check": exc.check, "batch_seq": exc.place.batch_seq, "entry": exc.place.entry}
    assert failure == v["want_error"]


@pytest.mark.parametrize("v", VECTORS["stored_tree"], ids=lambda v: v["name"])
def test_stored_tree(v: dict[str, Any]) -> None:
    check = TreeCheck([KEY])
    pending = [
        StoredCheckpointState(
            id=n,
            tree_size=c["tree_size"],
            note=c["note"],
            root_hash=bytes.fromhex(c["root_hash"]),
            tree_state=bytes.fromhex(c["tree_state"]),
        )
        for n, c in enumerate(v["checkpoints"], start=1)
    ]
    failure = None
    for header, leaf in zip(v["headers"], v["stored_leaves"], strict=True):
        failure = check.batch(msgspec.convert(header, BatchHeader), bytes.fromhex(leaf))
        while failure is None and pending and pending[0].tree_size == header["seq"]:
            failure = check.checkpoint(pending.pop(0))
        if failure is not None:
            break
    got = (
        None if failure is None else {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason}
    )
    assert got == v["want_failure"]


def stored_batches(lines: list[str]) -> list[StoredBatch]:
    """The batches a bundle holds, as the chain verifier reads them from the database."""
    batches: list[StoredBatch] = []
    for line in map(json.loads, lines):
        if line["type"] == "batch":
            header = msgspec.convert(line["header"], BatchHeader)
            batches.append(StoredBatch(header=header, chain_hash=bytes.fromhex(line["chain_hash"]), entries=[]))
        elif line["type"] == "record":
            record = line["record"].encode()
            entries = [*batches[-1].entries, StoredEntry(idx=line["idx"], record=record, leaf_hash=leaf_hash(record))]
            batches[-1] = msgspec.structs.replace(batches[-1], entries=entries)
    return batches


REVIEW_RULES = {"review_malformed", "review_correction_mismatch", "corrections_unaccounted"}


@pytest.mark.parametrize(
    "v",
    [v for v in VECTORS["bundles"] if v["want_error"] and v["want_error"]["check"] in REVIEW_RULES],
    ids=lambda v: v["name"],
)
def test_bundles_fail_with_the_check_and_place_the_chain_reports(v: dict[str, Any]) -> None:
    # One verification core: the same §6.1 code, so the same name at the same batch and entry.
    failure = verify_batches(stored_batches(v["lines"])).first_failure
    assert failure is not None
    assert {"check": failure.reason, "batch_seq": failure.batch_seq, "entry": failure.entry} == v["want_error"]
