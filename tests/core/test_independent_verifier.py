"""An independent implementation written only from docs/ledger-format.md.

It imports nothing from `ledger`: hashlib and json only. If it reproduces every vector, the
document specifies the format completely enough for a third party.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


# §2 canonical encoding
def canon(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# §3 hashes
def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def leaf(data: bytes) -> bytes:
    return sha(b"\x00" + data)


def node(left: bytes, right: bytes) -> bytes:
    return sha(b"\x01" + left + right)


def mth(hashes: list[bytes]) -> bytes:
    if not hashes:
        return sha(b"")
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return node(mth(hashes[:k]), mth(hashes[k:]))


def test_canonical_bytes() -> None:
    for vector in load("canonical.json"):
        assert canon(vector["value"]).hex() == vector["canonical_hex"], vector["name"]


def receipt_object(r: dict[str, Any]) -> dict[str, Any]:
    """A receipt (§4.3) from a vector's input, every member as the document lists it."""
    return {
        "batches": [{"batch_hash": h, "seq": s} for s, h in r["batches"]],
        "lab": r["lab"],
        "manifest_sha256": r["manifest_sha256"],
        "outcomes_root": r["outcomes_root"],
        "policy": {"name": r["policy_name"], "sha256": r["policy_sha256"], "version": r["policy_version"]},
        "rows": {
            "committed": r["rows_committed"],
            "duplicate": r["rows_duplicate"],
            "quarantined": r["rows_quarantined"],
            "total": r["rows_total"],
        },
        "task_id": r["task_id"],
        "type": "receipt",
        "v": 1,
    }


def test_record_bytes_and_hashes() -> None:
    by_name = {v["name"]: v for v in load("records.json")}
    a = by_name["asset"]["input"]
    asset = canon({"data": a["data"], "lab": a["lab"], "policy": a["policy"], "type": "asset", "v": 1})
    assert asset.hex() == by_name["asset"]["canonical_hex"]
    assert leaf(asset).hex() == by_name["asset"]["leaf_hash"]
    for outcome in ("committed", "duplicate", "quarantined"):
        i = by_name[f"row_outcome {outcome}"]["input"]
        obj: dict[str, Any] = {
            "errors": [{"field": f, "rule": r} for f, r in i["errors"]],
            "outcome": i["outcome"],
            "record_hash": i["record_hash"],
            "row": i["row"],
            "type": "row_outcome",
            "v": 1,
        }
        if outcome == "quarantined":
            obj["cells"] = i["cells"]
        assert leaf(canon(obj)).hex() == by_name[f"row_outcome {outcome}"]["leaf_hash"]
    receipt = canon(receipt_object(by_name["receipt"]["input"]))
    assert leaf(receipt).hex() == by_name["receipt"]["leaf_hash"]
    h = by_name["batch header"]
    header = canon({**h["input"], "v": 1})
    assert header.hex() == h["canonical_hex"]
    assert sha(bytes.fromhex(h["prev_chain_hash"]) + header).hex() == h["chain_hash"]


def test_merkle_roots() -> None:
    for tree in load("merkle.json")["trees"]:
        assert mth([leaf(bytes.fromhex(d)) for d in tree["leaf_data_hex"]]).hex() == tree["root"]


def verify(batches: list[dict[str, Any]]) -> tuple[int, int | None, str] | None:
    """§6, without the optional expected-record-hash check (the vectors carry no receipts
    for localisation)."""
    prev, expected_seq, asset_hashes = bytes(32), 1, {}
    pending: dict[str, Any] = {"from": 0, "hashes": []}  # §6.1 pending corrections
    for b in batches:
        h, seq = b["header"], expected_seq
        if h["seq"] != seq:
            return (seq, None, "batch_missing" if h["seq"] > seq else "batch_out_of_order")
        leaves = []
        for i, e in enumerate(b["entries"]):
            if e["idx"] != i:
                return (seq, i, "entry_missing")
            lh = leaf(bytes.fromhex(e["record_hex"]))
            if lh.hex() != e["leaf_hash"]:
                return (seq, i, "leaf_hash_mismatch")
            leaves.append(lh)
        if len(leaves) < h["records"]:
            return (seq, len(leaves), "entry_missing")
        if len(leaves) > h["records"]:
            return (seq, h["records"], "record_count_mismatch")
        if mth(leaves).hex() != h["batch_hash"]:
            return (seq, None, "batch_hash_mismatch")
        link = sha(prev + canon({**h, "v": 1}))
        if link.hex() != b["chain_hash"]:
            return (seq, None, "chain_hash_mismatch")
        failure = corrections_and_reviews(seq, h, b["entries"], leaves, pending)
        if failure is not None:
            return failure
        if h["kind"] == "receipt":
            receipt = json.loads(bytes.fromhex(b["entries"][0]["record_hex"]))
            for listed in receipt["batches"]:
                if asset_hashes.get(listed["seq"]) != listed["batch_hash"]:
                    return (seq, 0, "receipt_batch_mismatch")
            outcomes = [bytes.fromhex(o) for o in b["outcomes_hex"]]
            if len(outcomes) != receipt["rows"]["total"]:
                return (seq, 0, "outcomes_count_mismatch")
            if mth([leaf(o) for o in outcomes]).hex() != receipt["outcomes_root"]:
                return (seq, 0, "outcomes_root_mismatch")
        else:
            asset_hashes[seq] = h["batch_hash"]
        prev, expected_seq = link, expected_seq + 1
    return (pending["from"], None, "corrections_unaccounted") if pending["hashes"] else None


def test_chain_verifies() -> None:
    assert verify(load("chain.json")["ledger"]) is None


@pytest.mark.parametrize("vector", load("chain.json")["tampered"], ids=lambda v: v["name"])
def test_tampering_is_found_where_the_vectors_say(vector: dict[str, Any]) -> None:
    want = vector["want_failure"]
    assert verify(vector["batches"]) == (want["batch_seq"], want["entry"], want["reason"])


# §4.4 review entries and §6.1


REVIEW_MEMBERS = {
    "action",
    "actor",
    "at",
    "correction",
    "error",
    "item",
    "note",
    "policy",
    "reason",
    "status",
    "values",
}
REVIEW_TABLE = {  # action: (status, correction outcomes or None for no correction)
    "resubmit": ("resolved", {"committed", "duplicate"}),
    "requeue": ("resolved", {"committed", "duplicate"}),
    "dismiss": ("dismissed", None),
    "conflict": ("open", {"conflict"}),
    "failed": ("open", {"failed"}),
    "transfer": ("resolved", {"committed"}),  # revision 3
}
REASONS = {"schema_violation", "duplicate_key_in_manifest", "other_lab", "conflict", "transient_failure"}


def review_object(i: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: i[k] for k in REVIEW_MEMBERS - {"item"}},
        **({"transfer": i["transfer"]} if "transfer" in i else {}),
        "item": {"row": i["row"], "task_id": i["task_id"]},
        "type": "review",
        "v": 1,
    }


def is_hex64(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def review_valid(data: bytes) -> bool:
    try:
        r = json.loads(data)
    except ValueError:
        return False
    if not isinstance(r, dict) or canon(r) != data:
        return False
    # Revision 3: a transfer entry has one member more, naming the two labs; no other has it.
    transfer = r.get("transfer")
    if set(r) != REVIEW_MEMBERS | {"type", "v"} | ({"transfer"} if r.get("action") == "transfer" else set()):
        return False
    if r["action"] == "transfer" and not (
        isinstance(transfer, dict)
        and set(transfer) == {"from_lab", "to_lab"}
        and all(isinstance(transfer[k], str) and transfer[k] for k in ("from_lab", "to_lab"))
        and transfer["from_lab"] != transfer["to_lab"]
        and isinstance(r["note"], str)
        and r["note"].strip()
        and isinstance(r["correction"], dict)
        and r["correction"].get("ledger_hash") not in (None, r["correction"].get("record_hash"))
    ):
        return False
    if r["type"] != "review" or r["v"] != 1 or r["action"] not in REVIEW_TABLE or r["reason"] not in REASONS:
        return False
    status, outcomes = REVIEW_TABLE[r["action"]]
    if r["status"] != status or (r["error"] is not None) != (r["action"] == "failed"):
        return False
    if (r["action"], r["reason"]) in (
        ("conflict", r["reason"] != "conflict"),
        ("failed", r["reason"] != "transient_failure"),
    ):
        return False
    item, actor = r["item"], r["actor"]
    if not (isinstance(item, dict) and set(item) == {"row", "task_id"} and isinstance(item["row"], int)):
        return False
    if not (isinstance(actor, dict) and set(actor) == {"label", "role", "token_id"}):
        return False
    if outcomes is None:
        return (
            r["correction"] is None and r["values"] is None and r["policy"] is None and bool((r["note"] or "").strip())
        )
    c = r["correction"]
    if not isinstance(c, dict) or set(c) != {"ledger_hash", "outcome", "record_hash"} or c["outcome"] not in outcomes:
        return False
    if not is_hex64(c["record_hash"]) or not (c["ledger_hash"] is None or is_hex64(c["ledger_hash"])):
        return False
    if c["outcome"] == "duplicate" and c["ledger_hash"] != c["record_hash"]:
        return False
    if c["outcome"] == "conflict" and c["ledger_hash"] in (None, c["record_hash"]):
        return False
    return isinstance(r["values"], dict) and isinstance(r["policy"], dict)


def corrections_and_reviews(
    seq: int, h: dict[str, Any], entries: list[dict[str, Any]], leaves: list[bytes], pending: dict[str, Any]
) -> tuple[int, int | None, str] | None:
    if h["kind"] == "assets" and h["manifest_sha256"] is None:
        if not pending["hashes"]:
            pending["from"] = seq
        pending["hashes"] += [lh.hex() for lh in leaves]
        return None
    if h["kind"] != "review":
        return (pending["from"], None, "corrections_unaccounted") if pending["hashes"] else None
    hashes, pending["hashes"] = pending["hashes"], []
    for i, e in enumerate(entries):
        record = bytes.fromhex(e["record_hex"])
        if not review_valid(record):
            return (seq, i, "review_malformed")
        c = json.loads(record)["correction"]
        committed = c is not None and c["outcome"] == "committed"
        if committed and (not hashes or hashes.pop(0) != c["record_hash"]):
            return (seq, i, "review_correction_mismatch")
    return (seq, None, "corrections_unaccounted") if hashes else None


def test_review_records() -> None:
    for vector in load("review.json")["records"]:
        data = canon(review_object(vector["input"]))
        assert data.hex() == vector["canonical_hex"], vector["name"]
        assert leaf(data).hex() == vector["leaf_hash"] and review_valid(data)


def test_chain_with_reviews_verifies() -> None:
    assert verify(load("review.json")["ledger"]) is None


@pytest.mark.parametrize("vector", load("review.json")["tampered"], ids=lambda v: v["name"])
def test_review_tampering_is_found_where_the_vectors_say(vector: dict[str, Any]) -> None:
    want = vector["want_failure"]
    assert verify(vector["batches"]) == (want["batch_seq"], want["entry"], want["reason"])


def test_transfer_records() -> None:
    for vector in load("transfer.json")["records"]:
        data = canon(review_object(vector["input"]))
        assert data.hex() == vector["canonical_hex"], vector["name"]
        assert leaf(data).hex() == vector["leaf_hash"] and review_valid(data)


def test_chain_with_a_transfer_verifies() -> None:
    assert verify(load("transfer.json")["ledger"]) is None


@pytest.mark.parametrize("vector", load("transfer.json")["tampered"], ids=lambda v: v["name"])
def test_transfer_tampering_is_found_where_the_vectors_say(vector: dict[str, Any]) -> None:
    want = vector["want_failure"]
    assert verify(vector["batches"]) == (want["batch_seq"], want["entry"], want["reason"])


# Revision 4: a bundle's batches fail §6.1 exactly where a bundle verifier says (bundles.json).


def batches_of_bundle(lines: list[str]) -> list[dict[str, Any]]:
    batches: list[dict[str, Any]] = []
    for line in map(json.loads, lines):
        if line["type"] == "batch":
            batches.append(
                {"header": line["header"], "chain_hash": line["chain_hash"], "entries": [], "outcomes_hex": []}
            )
        elif line["type"] == "outcome":
            batches[-1]["outcomes_hex"].append(line["outcome"].encode().hex())
        elif line["type"] == "record":
            record = line["record"].encode()
            batches[-1]["entries"].append(
                {"idx": line["idx"], "record_hex": record.hex(), "leaf_hash": leaf(record).hex()}
            )
    return batches


@pytest.mark.parametrize(
    "vector",
    [
        v
        for v in load("bundles.json")["bundles"]
        if v["want_error"]
        and v["want_error"]["check"] in {"review_malformed", "review_correction_mismatch", "corrections_unaccounted"}
    ],
    ids=lambda v: v["name"],
)
def test_bundle_review_failures_are_the_chain_failures(vector: dict[str, Any]) -> None:
    want = vector["want_error"]
    assert verify(batches_of_bundle(vector["lines"])) == (want["batch_seq"], want["entry"], want["check"])


# Revision 5: a connector sync's receipt carries ``source`` (§4.3), written here from the
# document: members sorted, every page with all six members, null where §4.3 says.


def connector_source_valid(source: Any) -> bool:
    page_members = {"url", "cursor", "next", "sha256", "records", "error"}
    if not isinstance(source, dict) or set(source) != {"connector", "sync_id", "cursor_from", "cursor_to", "pages"}:
        return False
    if not (isinstance(source["connector"], str) and source["connector"] and isinstance(source["sync_id"], str)):
        return False
    if not all(v is None or isinstance(v, str) for v in (source["cursor_from"], source["cursor_to"])):
        return False
    pages = source["pages"]
    if not isinstance(pages, list) or not pages:
        return False
    for page in pages:
        if not isinstance(page, dict) or set(page) != page_members or not isinstance(page["url"], str):
            return False
        if not isinstance(page["records"], int) or isinstance(page["records"], bool) or page["records"] < 0:
            return False
        if page["error"] is None:
            sha = page["sha256"]
            if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
                return False
        elif page["sha256"] is not None or page["records"] != 0 or page["next"] is not None:
            return False
    return True


def test_connector_receipts() -> None:
    vectors = load("connectors.json")
    for vector in vectors["records"]:
        r = vector["input"]
        data = canon({**receipt_object(r), "source": r["source"]})
        assert data.hex() == vector["canonical_hex"], vector["name"]
        assert leaf(data).hex() == vector["leaf_hash"] and connector_source_valid(json.loads(data)["source"])
    for vector in vectors["malformed"]:
        assert not connector_source_valid(json.loads(bytes.fromhex(vector["canonical_hex"]))["source"]), vector["name"]
