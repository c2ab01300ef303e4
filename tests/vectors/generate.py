"""Regenerate the test vectors: `python tests/vectors/generate.py`.

The JSON files are committed; tests/core/test_vectors.py checks the code still produces them,
so a change that alters any hashed byte fails loudly. Everything binary is lowercase hex.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ledger.core import canonical, records, review
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import consistency_proof, inclusion_proof, root
from ledger.core.outcomes import row_outcome
from ledger.core.verify import StoredBatch, StoredEntry, verify_batches

HERE = Path(__file__).resolve().parent

CANONICAL_VALUES: list[tuple[str, Any]] = [
    ("empty object", {}),
    ("sorted keys", {"b": 1, "a": 2, "A": 3, "a_b": 4, "ab": 5}),
    ("nested", {"z": [1, {"y": None, "x": True}], "a": False}),
    ("integers", [0, -1, 9223372036854775807, -9223372036854775808]),
    ("escapes", 'quote " backslash \\ slash / newline \n tab \t cr \r bs \b ff \f'),
    ("control characters", "".join(chr(c) for c in range(0, 32)) + "\x7f"),
    ("non-ascii literal", "Ünïcødé — 😀 \u2028 \u2029 é"),
    ("empty string", ""),
]


def _hex(data: bytes) -> str:
    return data.hex()


def canonical_vectors() -> list[dict[str, Any]]:
    return [
        {"name": name, "value": value, "canonical_hex": _hex(canonical.encode(value))}
        for name, value in CANONICAL_VALUES
    ]


ASSET_DATA = {
    "asset_id": "CHEM-0042",
    "grant_code": "NSF-CHE2201234",
    "category": "chemical",
    "quantity": 12,
    "location": "CHM-204-A",
    "acquisition_date": "2024-05-02",
    "cas_number": "64-17-5",
    "hazard_class": "flammable",
    "unit_cost": "18.50",
    "description": "Ethanol, 200 proof — 4 L",
}


def record_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    asset = records.asset_record(policy="lab-inventory", lab="chem-lab", data=ASSET_DATA)
    out.append(
        {
            "name": "asset",
            "input": {"policy": "lab-inventory", "lab": "chem-lab", "data": ASSET_DATA},
            "canonical_hex": _hex(asset),
            "leaf_hash": _hex(leaf_hash(asset)),
        }
    )
    outcomes = [
        {"row": 1, "outcome": "committed", "record_hash": _hex(leaf_hash(asset)), "errors": [], "cells": None},
        {"row": 2, "outcome": "duplicate", "record_hash": _hex(leaf_hash(asset)), "errors": [], "cells": None},
        {
            "row": 3,
            "outcome": "quarantined",
            "record_hash": None,
            "errors": [["quantity", "minimum"], ["location", "pattern"]],
            "cells": ["EQ-1", "NIH-X1", "equipment", "-3", "lab 5", "2024-01-01", "", "", "", "=cmd"],
        },
    ]
    for item in outcomes:
        data = row_outcome(
            row=item["row"],
            outcome=item["outcome"],
            record_hash=item["record_hash"],
            errors=[tuple(e) for e in item["errors"]],
            cells=item["cells"],
        )
        out.append(
            {
                "name": f"row_outcome {item['outcome']}",
                "input": item,
                "canonical_hex": _hex(data),
                "leaf_hash": _hex(leaf_hash(data)),
            }
        )
    receipt_input = {
        "task_id": "3f1c9a52-6a0e-4c1e-9d2b-7f5d1c0e8a11",
        "lab": "chem-lab",
        "manifest_sha256": "ab" * 32,
        "policy_name": "lab-inventory",
        "policy_version": "1",
        "policy_sha256": "cd" * 32,
        "rows_total": 3,
        "rows_committed": 1,
        "rows_duplicate": 1,
        "rows_quarantined": 1,
        "outcomes_root": _hex(root([leaf_hash(bytes.fromhex(o["canonical_hex"])) for o in out[1:]])),
        "batches": [[1, "ef" * 32]],
    }
    receipt = records.receipt_record(**{**receipt_input, "batches": [tuple(b) for b in receipt_input["batches"]]})
    out.append(
        {
            "name": "receipt",
            "input": receipt_input,
            "canonical_hex": _hex(receipt),
            "leaf_hash": _hex(leaf_hash(receipt)),
        }
    )
    header = records.BatchHeader(
        seq=1,
        kind="assets",
        batch_hash="ef" * 32,
        records=1,
        manifest_sha256="ab" * 32,
        policy_sha256="cd" * 32,
        committed_at="2026-11-23T04:00:00.000000Z",
    )
    header_bytes = records.encode_header(header)
    out.append(
        {
            "name": "batch header",
            "input": {
                "seq": 1,
                "kind": "assets",
                "batch_hash": "ef" * 32,
                "records": 1,
                "manifest_sha256": "ab" * 32,
                "policy_sha256": "cd" * 32,
                "committed_at": "2026-11-23T04:00:00.000000Z",
            },
            "canonical_hex": _hex(header_bytes),
            "prev_chain_hash": "00" * 32,
            "chain_hash": _hex(records.chain_hash(bytes(32), header_bytes)),
        }
    )
    return out


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def merkle_vectors() -> dict[str, Any]:
    trees = [
        {"size": n, "leaf_data_hex": [_hex(i.to_bytes(4, "big")) for i in range(n)], "root": _hex(root(_leaves(n)))}
        for n in [*range(0, 11), 16, 17, 33]
    ]
    inclusion: list[dict[str, Any]] = []
    for n, i in [(1, 0), (2, 1), (5, 4), (7, 3), (8, 0), (17, 16), (33, 12)]:
        leaves = _leaves(n)
        proof = [_hex(p) for p in inclusion_proof(leaves, i)]
        good = {"index": i, "size": n, "leaf_hash": _hex(leaves[i]), "proof": proof, "root": _hex(root(leaves))}
        inclusion.append({"name": f"size {n} index {i}", **good, "wantErr": False})
        if proof:
            flipped = bytes.fromhex(proof[0])
            inclusion.append(
                {
                    "name": f"size {n} index {i}: proof[0] bit 3 flipped",
                    **good,
                    "proof": [_hex(bytes([flipped[0] ^ 8]) + flipped[1:]), *proof[1:]],
                    "wantErr": True,
                }
            )
            inclusion.append(
                {"name": f"size {n} index {i}: truncated proof", **good, "proof": proof[:-1], "wantErr": True}
            )
        inclusion.append(
            {"name": f"size {n} index {i}: trailing garbage", **good, "proof": [*proof, "00" * 32], "wantErr": True}
        )
        inclusion.append({"name": f"size {n} index {i}: wrong tree size", **good, "size": 2 * n, "wantErr": True})
        inclusion.append(
            {"name": f"size {n} index {i}: wrong leaf", **good, "leaf_hash": _hex(leaf_hash(b"other")), "wantErr": True}
        )
        if i + 1 < n:
            inclusion.append({"name": f"size {n} index {i}: index + 1", **good, "index": i + 1, "wantErr": True})
    consistency: list[dict[str, Any]] = []
    for m, n in [(1, 2), (3, 7), (4, 8), (6, 17), (16, 33)]:
        leaves = _leaves(n)
        proof = [_hex(p) for p in consistency_proof(leaves, m)]
        good = {
            "old_size": m,
            "new_size": n,
            "old_root": _hex(root(leaves[:m])),
            "new_root": _hex(root(leaves)),
            "proof": proof,
        }
        consistency.append({"name": f"{m} -> {n}", **good, "wantErr": False})
        first = bytes.fromhex(proof[0])
        consistency.append(
            {
                "name": f"{m} -> {n}: proof[0] bit 3 flipped",
                **good,
                "proof": [_hex(bytes([first[0] ^ 8]) + first[1:]), *proof[1:]],
                "wantErr": True,
            }
        )
        consistency.append({"name": f"{m} -> {n}: truncated", **good, "proof": proof[:-1], "wantErr": True})
        consistency.append(
            {"name": f"{m} -> {n}: trailing garbage", **good, "proof": [*proof, "00" * 32], "wantErr": True}
        )
        consistency.append(
            {"name": f"{m} -> {n}: wrong old root", **good, "old_root": _hex(leaf_hash(b"x")), "wantErr": True}
        )
    return {"trees": trees, "inclusion": inclusion, "consistency": consistency}


def _ledger() -> list[dict[str, Any]]:
    """Two imports: 3 committed assets in batches of 2, then receipts; as stored rows."""
    batches: list[dict[str, Any]] = []
    prev = bytes(32)
    seq = 0

    def add(kind: str, entries: list[bytes], outcomes: list[bytes] | None, manifest: str, when: str) -> None:
        nonlocal prev, seq
        seq += 1
        leaves = [leaf_hash(e) for e in entries]
        header = records.BatchHeader(
            seq=seq,
            kind=kind,
            batch_hash=_hex(root(leaves)),
            records=len(entries),
            manifest_sha256=manifest,
            policy_sha256="cd" * 32,
            committed_at=when,
        )
        link = records.chain_hash(prev, records.encode_header(header))
        batches.append(
            {
                "header": {
                    "seq": seq,
                    "kind": kind,
                    "batch_hash": header.batch_hash,
                    "records": len(entries),
                    "manifest_sha256": manifest,
                    "policy_sha256": "cd" * 32,
                    "committed_at": when,
                },
                "chain_hash": _hex(link),
                "entries": [
                    {"idx": i, "record_hex": _hex(e), "leaf_hash": _hex(leaf_hash(e))} for i, e in enumerate(entries)
                ],
                "outcomes_hex": None if outcomes is None else [_hex(o) for o in outcomes],
            }
        )
        prev = link

    assets = [
        records.asset_record(policy="lab-inventory", lab="chem-lab", data={**ASSET_DATA, "asset_id": f"A-{i:03d}"})
        for i in range(3)
    ]
    manifest = "ab" * 32
    add("assets", assets[:2], None, manifest, "2026-11-23T04:00:00.000000Z")
    add("assets", assets[2:], None, manifest, "2026-11-23T04:00:00.000000Z")
    outcomes = [
        row_outcome(row=i + 1, outcome="committed", record_hash=_hex(leaf_hash(a))) for i, a in enumerate(assets)
    ]
    outcomes.append(
        row_outcome(
            row=4,
            outcome="quarantined",
            record_hash=None,
            errors=[("quantity", "integer")],
            cells=["A-9", "NIH-X1", "equipment", "1.5"],
        )
    )
    receipt = records.receipt_record(
        task_id="3f1c9a52-6a0e-4c1e-9d2b-7f5d1c0e8a11",
        lab="chem-lab",
        manifest_sha256=manifest,
        policy_name="lab-inventory",
        policy_version="1",
        policy_sha256="cd" * 32,
        rows_total=4,
        rows_committed=3,
        rows_duplicate=0,
        rows_quarantined=1,
        outcomes_root=_hex(root([leaf_hash(o) for o in outcomes])),
        batches=[(1, batches[0]["header"]["batch_hash"]), (2, batches[1]["header"]["batch_hash"])],
    )
    add("receipt", [receipt], outcomes, manifest, "2026-11-23T04:00:00.000000Z")
    return batches


def to_stored(batches: list[dict[str, Any]]) -> list[StoredBatch]:
    return [
        StoredBatch(
            header=records.BatchHeader(**b["header"]),
            chain_hash=bytes.fromhex(b["chain_hash"]),
            entries=[
                StoredEntry(
                    idx=e["idx"], record=bytes.fromhex(e["record_hex"]), leaf_hash=bytes.fromhex(e["leaf_hash"])
                )
                for e in b["entries"]
            ],
            outcomes=None if b["outcomes_hex"] is None else [bytes.fromhex(o) for o in b["outcomes_hex"]],
        )
        for b in batches
    ]


def chain_vectors() -> dict[str, Any]:
    ledger = _ledger()
    tampered: list[dict[str, Any]] = []

    def variant(name: str, mutate: Any) -> None:
        batches = copy.deepcopy(ledger)
        mutate(batches)
        failure = verify_batches(to_stored(batches)).first_failure
        assert failure is not None, name
        tampered.append(
            {
                "name": name,
                "batches": batches,
                "want_failure": {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason},
            }
        )

    def change_quantity(b: list[dict[str, Any]]) -> None:
        e = b[0]["entries"][1]
        e["record_hex"] = _hex(bytes.fromhex(e["record_hex"]).replace(b'"quantity":12', b'"quantity":13'))

    def rewrite_consistently(b: list[dict[str, Any]]) -> None:
        change_quantity(b)
        e = b[0]["entries"][1]
        e["leaf_hash"] = _hex(leaf_hash(bytes.fromhex(e["record_hex"])))

    def delete_entry(b: list[dict[str, Any]]) -> None:
        del b[0]["entries"][0]

    def delete_batch(b: list[dict[str, Any]]) -> None:
        del b[1]

    def swap(b: list[dict[str, Any]]) -> None:
        e = b[0]["entries"]
        e[0]["record_hex"], e[1]["record_hex"] = e[1]["record_hex"], e[0]["record_hex"]
        e[0]["leaf_hash"], e[1]["leaf_hash"] = e[1]["leaf_hash"], e[0]["leaf_hash"]

    def retime(b: list[dict[str, Any]]) -> None:
        b[1]["header"]["committed_at"] = "2026-11-23T04:00:01.000000Z"

    def drop_outcome(b: list[dict[str, Any]]) -> None:
        b[2]["outcomes_hex"] = b[2]["outcomes_hex"][:-1]

    def forge_outcome(b: list[dict[str, Any]]) -> None:
        b[2]["outcomes_hex"][3] = _hex(
            row_outcome(row=4, outcome="quarantined", record_hash=None, errors=[("quantity", "minimum")], cells=["A-9"])
        )

    variant("one quantity changed", change_quantity)
    variant("entry rewritten with its leaf hash", rewrite_consistently)
    variant("entry deleted", delete_entry)
    variant("batch deleted", delete_batch)
    variant("two entries swapped", swap)
    variant("batch time changed", retime)
    variant("row outcome dropped", drop_outcome)
    variant("row outcome rewritten", forge_outcome)
    return {"ledger": ledger, "tampered": tampered}


# ---------------------------------------------------------------- review entries (§4.4, §6.1)

REVIEW_TASK = "3f1c9a52-6a0e-4c1e-9d2b-7f5d1c0e8a11"
REVIEW_ACTOR = {"token_id": "0b6f3c1e-8d4a-4f7e-9a55-2f1d8c3b7e90", "role": "compliance_officer", "label": "Dana (QA)"}
REVIEW_POLICY = {"name": "lab-inventory", "version": "1", "sha256": "cd" * 32}
REVIEW_AT = "2026-11-23T05:00:00.000000Z"


def _review_inputs(correction_hash: str, ledger_hash: str | None) -> list[dict[str, Any]]:
    """One review of each action: the inputs of §4.4 (every member, null when unused)."""
    base = {"task_id": REVIEW_TASK, "actor": REVIEW_ACTOR, "at": REVIEW_AT, "error": None}
    return [
        {
            **base,
            "row": 4,
            "action": "resubmit",
            "status": "resolved",
            "reason": "schema_violation",
            "note": "quantity was typed as 1.5",
            "values": {"quantity": "2"},
            "policy": REVIEW_POLICY,
            "correction": {"outcome": "committed", "record_hash": correction_hash, "ledger_hash": ledger_hash},
        },
        {
            **base,
            "row": 5,
            "action": "dismiss",
            "status": "dismissed",
            "reason": "duplicate_key_in_manifest",
            "note": "=not ours — sold in 2023",
            "values": None,
            "policy": None,
            "correction": None,
        },
        {
            **base,
            "row": 6,
            "action": "conflict",
            "status": "open",
            "reason": "conflict",
            "note": None,
            "values": {"location": "CHM-204"},
            "policy": REVIEW_POLICY,
            "correction": {"outcome": "conflict", "record_hash": "ee" * 32, "ledger_hash": correction_hash},
        },
        {
            **base,
            "row": 7,
            "action": "failed",
            "status": "open",
            "reason": "transient_failure",
            "note": None,
            "values": {"quantity": "3"},
            "policy": REVIEW_POLICY,
            "correction": {"outcome": "failed", "record_hash": "dd" * 32, "ledger_hash": None},
            "error": "lock_not_available",
        },
        {
            **base,
            "row": 7,
            "action": "requeue",
            "status": "resolved",
            "reason": "transient_failure",
            "note": "database back",
            "values": {"quantity": "3"},
            "policy": REVIEW_POLICY,
            "correction": {"outcome": "duplicate", "record_hash": "dd" * 32, "ledger_hash": "dd" * 32},
        },
    ]


def review_bytes(i: dict[str, Any]) -> bytes:
    return review.review_record(
        task_id=i["task_id"],
        row=i["row"],
        action=i["action"],
        status=i["status"],
        reason=i["reason"],
        actor=review.Actor(**i["actor"]),
        at=i["at"],
        note=i["note"],
        values=i["values"],
        policy=None if i["policy"] is None else review.PolicyRef(**i["policy"]),
        correction=None if i["correction"] is None else review.Correction(**i["correction"]),
        error=i["error"],
        transfer=None if i.get("transfer") is None else review.Transfer(**i["transfer"]),
    )


def _relink(batches: list[dict[str, Any]]) -> None:
    """Recompute every leaf hash, batch hash and chain link: a forger with write access."""
    prev = bytes(32)
    for seq, b in enumerate(batches, start=1):
        leaves = [leaf_hash(bytes.fromhex(e["record_hex"])) for e in b["entries"]]
        for e, leaf in zip(b["entries"], leaves, strict=True):
            e["leaf_hash"] = _hex(leaf)
        b["header"].update(seq=seq, batch_hash=_hex(root(leaves)), records=len(leaves))
        prev = records.chain_hash(prev, records.encode_header(records.BatchHeader(**b["header"])))
        b["chain_hash"] = _hex(prev)


def _unlinked_batch(kind: str, entries: list[bytes], when: str) -> dict[str, Any]:
    """A batch without manifest or policy (corrections, reviews), its hashes left for _relink."""
    return {
        "header": {
            "seq": 0,
            "kind": kind,
            "batch_hash": "",
            "records": 0,
            "manifest_sha256": None,
            "policy_sha256": None,
            "committed_at": when,
        },
        "chain_hash": "",
        "entries": [{"idx": i, "record_hex": _hex(e), "leaf_hash": ""} for i, e in enumerate(entries)],
        "outcomes_hex": None,
    }


def _tampered(ledger: list[dict[str, Any]], name: str, mutate: Any, *, relink: bool) -> dict[str, Any]:
    """A copy of ``ledger`` changed by ``mutate`` (relinked as a forger would, if asked), with
    the failure a verifier following §6 reports for it."""
    batches = copy.deepcopy(ledger)
    mutate(batches)
    if relink:
        _relink(batches)
    failure = verify_batches(to_stored(batches)).first_failure
    assert failure is not None, name
    return {
        "name": name,
        "batches": batches,
        "want_failure": {"batch_seq": failure.batch_seq, "entry": failure.entry, "reason": failure.reason},
    }


def review_vectors() -> dict[str, Any]:
    """Review records of every action, and a ledger where an import is followed by a
    correction with its review batch and by a review batch alone."""
    corrected = records.asset_record(
        policy="lab-inventory", lab="chem-lab", data={**ASSET_DATA, "asset_id": "A-009", "quantity": 2}
    )
    correction_hash = _hex(leaf_hash(corrected))
    inputs = _review_inputs(correction_hash, None)
    out_records = [
        {
            "name": f"review {i['action']}",
            "input": i,
            "canonical_hex": _hex(review_bytes(i)),
            "leaf_hash": _hex(leaf_hash(review_bytes(i))),
        }
        for i in inputs
    ]
    ledger = _ledger()  # seq 1-3: an import

    later = "2026-11-23T05:00:01.000000Z"
    ledger.append(_unlinked_batch("assets", [corrected], REVIEW_AT))  # seq 4: the correction
    ledger.append(_unlinked_batch("review", [review_bytes(i) for i in inputs[:3]], REVIEW_AT))  # seq 5
    ledger.append(_unlinked_batch("review", [review_bytes(i) for i in inputs[3:]], later))  # seq 6
    _relink(ledger)
    assert verify_batches(to_stored(ledger)).ok
    tampered: list[dict[str, Any]] = []

    def variant(name: str, mutate: Any, *, relink: bool = False) -> None:
        tampered.append(_tampered(ledger, name, mutate, relink=relink))

    def edit_review(b: list[dict[str, Any]], position: int, **changes: Any) -> None:
        b[4]["entries"][position]["record_hex"] = _hex(review_bytes({**inputs[position], **changes}))

    def change_note(b: list[dict[str, Any]]) -> None:
        edit_review(b, 1, note="approved by the lab")

    def rewrite_consistently(b: list[dict[str, Any]]) -> None:
        change_note(b)
        e = b[4]["entries"][1]
        e["leaf_hash"] = _hex(leaf_hash(bytes.fromhex(e["record_hex"])))

    def other_correction(b: list[dict[str, Any]]) -> None:
        edit_review(b, 0, correction={"outcome": "committed", "record_hash": "ab" * 32, "ledger_hash": None})

    def drop_review_batch(b: list[dict[str, Any]]) -> None:
        del b[4:]

    def correction_unreviewed(b: list[dict[str, Any]]) -> None:
        edit_review(b, 0, action="dismiss", status="dismissed", values=None, policy=None, correction=None)

    def malformed(b: list[dict[str, Any]]) -> None:
        # A dismissal without its reason is no valid review entry.
        record = json.loads(bytes.fromhex(b[4]["entries"][1]["record_hex"]))
        record["note"] = None
        b[4]["entries"][1]["record_hex"] = _hex(canonical.encode(record))

    def delete_review_batch(b: list[dict[str, Any]]) -> None:
        del b[4]

    variant("review note changed", change_note)
    variant("review entry rewritten with its leaf hash", rewrite_consistently)
    variant("review batch deleted", delete_review_batch)
    variant("relinked: review names another correction", other_correction, relink=True)
    variant("relinked: correction without its review batch", drop_review_batch, relink=True)
    variant("relinked: committed correction reviewed as a dismissal", correction_unreviewed, relink=True)
    variant("relinked: dismissal without a reason", malformed, relink=True)
    return {"records": out_records, "ledger": ledger, "tampered": tampered}


# ---------------------------------------------------------------- transfers (revision 3)


def transfer_vectors() -> dict[str, Any]:
    """A transfer review entry (§4.4, document revision 3), and a ledger where an import of
    chem-lab is followed by an officer's transfer of one of its keys to bio-lab: the corrected
    record under bio-lab, then the review batch that decides it."""
    ledger = _ledger()  # seq 1-3: an import of chem-lab
    held = bytes.fromhex(ledger[0]["entries"][0]["record_hex"])
    moved = json.loads(held)
    moved["lab"] = "bio-lab"
    moved["data"]["location"] = "BIO-110"
    transferred = canonical.encode(moved)
    base = {"task_id": REVIEW_TASK, "actor": REVIEW_ACTOR, "at": REVIEW_AT, "error": None}
    entry = {
        **base,
        "row": 8,
        "action": "transfer",
        "status": "resolved",
        "reason": "other_lab",
        "note": "moved to the bio lab with its grant, March 2026",
        "values": {"location": "BIO-110"},
        "policy": REVIEW_POLICY,
        "correction": {
            "outcome": "committed",
            "record_hash": _hex(leaf_hash(transferred)),
            "ledger_hash": _hex(leaf_hash(held)),
        },
        "transfer": {"from_lab": "chem-lab", "to_lab": "bio-lab"},
    }
    dismissal = {
        **base,
        "row": 9,
        "action": "dismiss",
        "status": "dismissed",
        "reason": "other_lab",
        "note": "a typo of another lab's tag",
        "values": None,
        "policy": None,
        "correction": None,
    }
    out_records = [
        {"name": f"review {i['action']} ({i['reason']})", "input": i, "canonical_hex": _hex(review_bytes(i))}
        for i in (entry, dismissal)
    ]
    for r in out_records:
        r["leaf_hash"] = _hex(leaf_hash(bytes.fromhex(r["canonical_hex"])))

    ledger.append(_unlinked_batch("assets", [transferred], REVIEW_AT))  # seq 4: the key, now bio-lab's
    ledger.append(_unlinked_batch("review", [review_bytes(entry), review_bytes(dismissal)], REVIEW_AT))  # seq 5
    _relink(ledger)
    assert verify_batches(to_stored(ledger)).ok
    tampered: list[dict[str, Any]] = []

    def variant(name: str, mutate: Any, *, relink: bool = True) -> None:
        tampered.append(_tampered(ledger, name, mutate, relink=relink))

    def edit(position: int, change: Any) -> Any:
        """Rewrite the review entry at ``position`` as JSON, canonically (no checks applied)."""

        def mutate(b: list[dict[str, Any]]) -> None:
            record = json.loads(bytes.fromhex(b[4]["entries"][position]["record_hex"]))
            change(record)
            b[4]["entries"][position]["record_hex"] = _hex(canonical.encode(record))

        return mutate

    def set_member(name: str, value: Any) -> Any:
        return lambda r: r.__setitem__(name, value)

    variant("transfer labs changed", edit(0, lambda r: r["transfer"].update(from_lab="phys-lab")), relink=False)
    variant("relinked: transfer without its labs", edit(0, lambda r: r.pop("transfer")))
    variant("relinked: transfer labs set to null", edit(0, set_member("transfer", None)))
    variant(
        "relinked: transfer to the lab that held the key", edit(0, lambda r: r["transfer"].update(to_lab="chem-lab"))
    )
    variant("relinked: transfer without a note", edit(0, set_member("note", "")))
    variant(
        "relinked: transfer that names no superseded revision",
        edit(0, lambda r: r["correction"].update(ledger_hash=None)),
    )
    variant("relinked: transfer labs on a dismissal", edit(1, set_member("transfer", {"from_lab": "a", "to_lab": "b"})))
    variant(
        "relinked: transfer names another correction", edit(0, lambda r: r["correction"].update(record_hash="ab" * 32))
    )
    variant("relinked: unknown reason", edit(1, set_member("reason", "not_ours")))
    return {"records": out_records, "ledger": ledger, "tampered": tampered}


def connector_vectors() -> dict[str, Any]:
    """Revision 5: receipts of imports made by a connector's sync, with their ``source``; and
    receipts whose ``source`` breaks a §4.3 rule, which a verifier MUST reject."""
    base = {
        "task_id": "7b0d6c44-2f1e-4a8b-9c3d-5e6f7a8b9c0d",
        "lab": "chem-lab",
        "manifest_sha256": "5a" * 32,
        "policy_name": "lab-inventory",
        "policy_version": "1",
        "policy_sha256": "cd" * 32,
        "rows_total": 3,
        "rows_committed": 2,
        "rows_duplicate": 0,
        "rows_quarantined": 1,
        "outcomes_root": "0e" * 32,
        "batches": [[7, "3c" * 32]],
    }
    page = "https://wms.example.edu/api/v2/inventory?updated_since=2024-01-01T00%3A00%3A00Z&limit=2"
    complete = {
        "connector": "chem-wms",
        "sync_id": "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
        "cursor_from": "2024-01-01T00:00:00Z",
        "cursor_to": "2024-06-01T00:00:02Z",
        "pages": [
            {"url": page, "cursor": None, "next": "2", "sha256": "11" * 32, "records": 2, "error": None},
            {"url": page + "&cursor=2", "cursor": "2", "next": None, "sha256": "22" * 32, "records": 1, "error": None},
        ],
    }
    partial = {
        **complete,
        "cursor_to": "2024-06-01T00:00:01Z",
        "pages": [
            complete["pages"][0],
            {
                "url": page + "&cursor=2",
                "cursor": "2",
                "next": None,
                "sha256": None,
                "records": 0,
                "error": "retries_exhausted",
            },
        ],
    }
    first_sync = {**complete, "cursor_from": None}
    out_records = []
    for name, source in [("complete sync", complete), ("partial sync", partial), ("first sync", first_sync)]:
        data = records.receipt_record(**{**base, "batches": [tuple(b) for b in base["batches"]]}, source=source)
        out_records.append(
            {
                "name": name,
                "input": {**base, "source": source},
                "canonical_hex": _hex(data),
                "leaf_hash": _hex(leaf_hash(data)),
            }
        )
    plain = records.receipt_record(**{**base, "batches": [tuple(b) for b in base["batches"]]})
    malformed = []

    def bad(name: str, mutate: Any) -> None:
        obj = json.loads(
            records.receipt_record(**{**base, "batches": [tuple(b) for b in base["batches"]]}, source=complete)
        )
        mutate(obj["source"])
        malformed.append(
            {"name": name, "canonical_hex": _hex(canonical.encode(obj)), "want_error": "receipt_malformed"}
        )

    bad("an unknown member", lambda src: src.update(extra=1))
    bad("no pages", lambda src: src.update(pages=[]))
    bad("a page's sha256 in upper case", lambda src: src["pages"][0].update(sha256="AB" * 32))
    bad("a read page without sha256", lambda src: src["pages"][0].update(sha256=None))
    bad("a failed page with a sha256", lambda src: src["pages"][1].update(error="retries_exhausted"))
    bad("a failed page with records", lambda src: src["pages"][1].update(sha256=None, error="upstream_error"))
    bad("a page without its error member", lambda src: src["pages"][0].pop("error"))
    bad("cursor_to missing", lambda src: src.pop("cursor_to"))
    bad("records as text", lambda src: src["pages"][0].update(records="2"))
    return {
        "records": out_records,
        "without_source": {"canonical_hex": _hex(plain), "leaf_hash": _hex(leaf_hash(plain))},
        "malformed": malformed,
    }


def main() -> None:
    import sys

    sys.path.insert(0, str(HERE.parents[1]))  # run as a script: make `tests` importable
    from tests.vectors.audit_ledger import audit_vectors, bundle_vectors

    for name, data in [
        ("canonical.json", canonical_vectors()),
        ("records.json", record_vectors()),
        ("merkle.json", merkle_vectors()),
        ("chain.json", chain_vectors()),
        ("review.json", review_vectors()),
        ("transfer.json", transfer_vectors()),
        ("connectors.json", connector_vectors()),
        ("audit.json", audit_vectors()),
        ("bundles.json", bundle_vectors()),
    ]:
        (HERE / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
