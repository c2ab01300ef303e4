"""Review entries: which decisions are well-formed, their bytes, and the chain rules for them."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from ledger.core import records
from ledger.core.errors import LedgerFormatError
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import root
from ledger.core.review import Actor, Correction, PolicyRef, parse_review, review_record
from ledger.core.verify import StoredBatch, StoredEntry, verify_batches

ACTOR = Actor(token_id="0b6f3c1e-8d4a-4f7e-9a55-2f1d8c3b7e90", role="compliance_officer", label=None)
POLICY = PolicyRef(name="lab-inventory", version="1", sha256="cd" * 32)
H1, H2 = "11" * 32, "22" * 32


def make(**overrides: Any) -> bytes:
    args: dict[str, Any] = {
        "task_id": "3f1c9a52-6a0e-4c1e-9d2b-7f5d1c0e8a11",
        "row": 3,
        "action": "resubmit",
        "status": "resolved",
        "reason": "schema_violation",
        "actor": ACTOR,
        "at": "2026-11-23T05:00:00.000000Z",
        "note": "fixed",
        "values": {"quantity": "2"},
        "policy": POLICY,
        "correction": Correction(outcome="committed", record_hash=H1, ledger_hash=None),
        "error": None,
    }
    return review_record(**{**args, **overrides})


def test_a_resubmit_has_every_member_sorted_and_parses_back() -> None:
    data = make()
    assert data.startswith(b'{"action":"resubmit","actor":{"label":null,')
    assert b'"type":"review","v":1,"values":{"quantity":"2"}}' in data
    review = parse_review(data)
    assert review.item.row == 3 and review.correction is not None and review.correction.record_hash == H1


@pytest.mark.parametrize(
    "overrides",
    [
        {"action": "dismiss", "status": "dismissed", "values": None, "policy": None, "correction": None},
        {"correction": Correction(outcome="duplicate", record_hash=H1, ledger_hash=H1)},
        {
            "action": "conflict",
            "status": "open",
            "reason": "conflict",
            "correction": Correction(outcome="conflict", record_hash=H1, ledger_hash=H2),
        },
        {
            "action": "failed",
            "status": "open",
            "reason": "transient_failure",
            "correction": Correction(outcome="failed", record_hash=H1, ledger_hash=None),
            "error": "lock_not_available",
        },
        {"action": "requeue", "reason": "transient_failure"},
    ],
    ids=["dismiss", "duplicate", "conflict", "failed", "requeue"],
)
def test_each_action_is_accepted(overrides: dict[str, Any]) -> None:
    assert parse_review(make(**overrides)).action == overrides.get("action", "resubmit")


@pytest.mark.parametrize(
    "overrides",
    [
        {"action": "approve"},
        {"status": "open"},
        {"reason": "because"},
        {"row": 0},
        {"correction": None},
        {"values": None},
        {"policy": None},
        {"correction": Correction(outcome="conflict", record_hash=H1, ledger_hash=H2)},
        {"correction": Correction(outcome="duplicate", record_hash=H1, ledger_hash=H2)},
        {"correction": Correction(outcome="committed", record_hash="AB" * 32, ledger_hash=None)},
        {"error": "lock_not_available"},
        {"action": "dismiss", "status": "dismissed", "values": None, "policy": None, "correction": None, "note": " "},
        {"action": "dismiss", "status": "dismissed", "correction": None},
        {
            "action": "conflict",
            "status": "open",
            "reason": "conflict",
            "correction": Correction(outcome="conflict", record_hash=H1, ledger_hash=H1),
        },
        {
            "action": "failed",
            "status": "open",
            "reason": "transient_failure",
            "correction": Correction(outcome="failed", record_hash=H1, ledger_hash=None),
        },
    ],
)
def test_malformed_decisions_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(LedgerFormatError):
        make(**overrides)


def test_parse_refuses_non_canonical_unknown_and_other_types() -> None:
    data = make()
    with pytest.raises(LedgerFormatError, match="canonical"):
        parse_review(data.replace(b'"action":', b'"action": '))
    with pytest.raises(LedgerFormatError):
        parse_review(data[:-1] + b',"extra":1}')
    with pytest.raises(LedgerFormatError):
        parse_review(records.asset_record(policy="p", lab="l", data={"asset_id": "A"}))
    obj = msgspec.json.decode(data)
    obj["v"] = 2
    with pytest.raises(LedgerFormatError):
        parse_review(msgspec.json.encode(obj, order="sorted"))


def _chain(*batches: tuple[str, list[bytes]]) -> list[StoredBatch]:
    out: list[StoredBatch] = []
    prev = bytes(32)
    for seq, (kind, entries) in enumerate(batches, start=1):
        leaves = [leaf_hash(e) for e in entries]
        header = records.BatchHeader(
            seq=seq,
            kind=kind,
            batch_hash=root(leaves).hex(),
            records=len(entries),
            manifest_sha256=None,
            policy_sha256=None,
            committed_at="2026-11-23T05:00:00.000000Z",
        )
        prev = records.chain_hash(prev, records.encode_header(header))
        stored = [StoredEntry(i, e, leaf) for i, (e, leaf) in enumerate(zip(entries, leaves, strict=True))]
        out.append(StoredBatch(header=header, chain_hash=prev, entries=stored))
    return out


def test_corrections_must_be_accounted_for_by_the_next_review_batch() -> None:
    asset = records.asset_record(policy="lab-inventory", lab="chem-lab", data={"asset_id": "A-1"})
    reviewed = make(correction=Correction(outcome="committed", record_hash=leaf_hash(asset).hex(), ledger_hash=None))
    assert verify_batches(_chain(("assets", [asset]), ("review", [reviewed]))).ok
    # Another correction named, the correction left alone, or a review committing nothing.
    failure = verify_batches(_chain(("assets", [asset]), ("review", [make()]))).first_failure
    assert failure is not None and (failure.batch_seq, failure.entry, failure.reason) == (
        2,
        0,
        "review_correction_mismatch",
    )
    failure = verify_batches(_chain(("assets", [asset]))).first_failure
    assert failure is not None and (failure.batch_seq, failure.entry, failure.reason) == (
        1,
        None,
        "corrections_unaccounted",
    )
    dismissal = make(action="dismiss", status="dismissed", values=None, policy=None, correction=None)
    failure = verify_batches(_chain(("assets", [asset]), ("review", [dismissal]))).first_failure
    assert failure is not None and (failure.batch_seq, failure.reason) == (2, "corrections_unaccounted")
    failure = verify_batches(_chain(("review", [b'{"type":"review"}']))).first_failure
    assert failure is not None and (failure.batch_seq, failure.entry, failure.reason) == (1, 0, "review_malformed")
