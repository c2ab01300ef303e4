"""Proof documents an auditor keeps and checks offline (docs/ledger-format.md §8-§10).

Two trees: each batch's RFC 9162 tree over its records (root = the header's batch_hash), and
the ledger tree over batch headers, leaf i = leaf_hash(canonical header of batch i + 1),
whose root and size a signed checkpoint states. A record is in the ledger when its path
leads to its batch's hash and that batch's header is a leaf of a checkpointed tree.

Every check takes plain data and raises a VerificationError naming the check and the place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar

import msgspec

from ledger.core.checkpoint import Checkpoint, parse_body, verify_checkpoint
from ledger.core.errors import LedgerFormatError, ProofError
from ledger.core.failures import (
    ConsistencyError,
    InclusionError,
    Place,
    ReceiptError,
    VerificationError,
)
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import consistency_proof, inclusion_proof, verify_consistency, verify_inclusion
from ledger.core.note import Verifier
from ledger.core.records import BatchHeader, Receipt, encode_header, parse_receipt

__all__ = [
    "PROOF_VERSION",
    "BatchInclusion",
    "ConsistencyProof",
    "EntryProof",
    "ReceiptProof",
    "build_batch_inclusion",
    "build_consistency_proof",
    "build_entry_proof",
    "build_receipt_proof",
    "decode_document",
    "read_checkpoint",
    "tree_leaf",
    "verify_batch_inclusion",
    "verify_consistency_proof",
    "verify_entry_proof",
    "verify_receipt_proof",
]

PROOF_VERSION = 1

_T = TypeVar("_T")


def tree_leaf(header: BatchHeader) -> bytes:
    """The ledger tree's leaf for one batch: its canonical header, which carries the batch
    hash (so every record) and the sequence number (so the order)."""
    return leaf_hash(encode_header(header))


class BatchInclusion(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    header: BatchHeader
    tree_path: list[str]


class EntryProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    type: Literal["entry_proof"]
    entry_id: int | None
    index: int
    record: str
    leaf_hash: str
    batch_path: list[str]
    batch: BatchInclusion
    checkpoint: str


class ReceiptProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    type: Literal["receipt_proof"]
    task_id: str
    receipt: str
    receipt_batch: BatchInclusion
    batches: list[BatchInclusion]
    checkpoint: str


class ConsistencyProof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    v: int
    type: Literal["consistency_proof"]
    old_size: int
    new_size: int
    proof: list[str]
    old_checkpoint: str | None = None
    new_checkpoint: str | None = None


def decode_document(data: bytes | str, kind: type[_T], *, where: str) -> _T:
    try:
        doc = msgspec.json.decode(data, type=kind)
    except msgspec.DecodeError as exc:
        raise VerificationError("document_format", where, str(exc)) from exc
    version = getattr(doc, "v", PROOF_VERSION)
    if version != PROOF_VERSION:
        raise VerificationError("document_format", where, f"version {version} is not {PROOF_VERSION}")
    return doc


def _hashes(values: Sequence[str], where: Place | str) -> list[bytes]:
    out = []
    for i, value in enumerate(values):
        try:
            node = bytes.fromhex(value)
        except ValueError as exc:
            raise VerificationError("document_format", where, f"path node {i} is not hex") from exc
        out.append(node)
    return out


def _hex32(value: str, where: Place | str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise VerificationError("document_format", where, f"{what} is not hex") from exc
    if len(raw) != 32:
        raise VerificationError("document_format", where, f"{what} is {len(raw)} bytes, expected 32")
    return raw


def read_checkpoint(text: str, verifiers: Iterable[Verifier] | None, *, where: str = "checkpoint") -> Checkpoint:
    """Verified against the trusted keys; with ``verifiers`` None, parsed without trust (the
    caller must say so to the user)."""
    if verifiers is None:
        split = text.rfind("\n\n")
        return parse_body(text[: split + 1] if split >= 0 else text, where=where)
    return verify_checkpoint(text, verifiers, where=where)


def verify_batch_inclusion(inclusion: BatchInclusion, checkpoint: Checkpoint) -> None:
    header = inclusion.header
    where = Place(batch_seq=header.seq, label=f"batch {header.seq} in the checkpoint of size {checkpoint.size}")
    if not 1 <= header.seq <= checkpoint.size:
        raise InclusionError("batch_in_checkpoint", where, "the checkpoint's tree does not reach this batch")
    try:
        leaf = tree_leaf(header)
    except LedgerFormatError as exc:
        raise InclusionError("batch_header", Place(batch_seq=header.seq), str(exc)) from exc
    try:
        verify_inclusion(header.seq - 1, checkpoint.size, leaf, _hashes(inclusion.tree_path, where), checkpoint.root)
    except ProofError as exc:
        raise InclusionError("batch_in_checkpoint", where, str(exc)) from exc


class EntryVerified(msgspec.Struct, frozen=True):
    batch_seq: int
    index: int
    leaf_hash: str
    checkpoint: Checkpoint


def verify_entry_proof(proof: EntryProof, verifiers: Iterable[Verifier] | None) -> EntryVerified:
    header = proof.batch.header
    where = Place(batch_seq=header.seq, entry=proof.index)
    checkpoint = read_checkpoint(proof.checkpoint, verifiers)
    record = proof.record.encode()
    leaf = leaf_hash(record)
    if leaf != _hex32(proof.leaf_hash, where, "leaf_hash"):
        raise InclusionError(
            "record_hash", where, f"the record hashes to {leaf.hex()}, the proof says {proof.leaf_hash}"
        )
    batch_hash = _hex32(header.batch_hash, where, "batch_hash")
    if not 0 <= proof.index < header.records:
        raise InclusionError("record_in_batch", where, f"index outside a batch of {header.records} records")
    try:
        verify_inclusion(proof.index, header.records, leaf, _hashes(proof.batch_path, where), batch_hash)
    except ProofError as exc:
        raise InclusionError("record_in_batch", where, str(exc)) from exc
    verify_batch_inclusion(proof.batch, checkpoint)
    return EntryVerified(batch_seq=header.seq, index=proof.index, leaf_hash=leaf.hex(), checkpoint=checkpoint)


class ReceiptVerified(msgspec.Struct, frozen=True):
    receipt: Receipt
    batch_seq: int
    checkpoint: Checkpoint


def verify_receipt_proof(
    proof: ReceiptProof, verifiers: Iterable[Verifier] | None, manifest: Iterable[bytes] | None = None
) -> ReceiptVerified:
    """The receipt is a ledger entry in a checkpointed tree, every asset batch it lists is too,
    and (given the manifest's bytes) the file in hand is the one it records."""
    checkpoint = read_checkpoint(proof.checkpoint, verifiers)
    header = proof.receipt_batch.header
    where = Place(batch_seq=header.seq, label=f"receipt batch {header.seq}")
    record = proof.receipt.encode()
    try:
        receipt = parse_receipt(record)
    except LedgerFormatError as exc:
        raise ReceiptError("receipt_format", where, str(exc)) from exc
    if receipt.task_id != proof.task_id:
        raise ReceiptError("receipt_task", where, f"receipt is for task {receipt.task_id}, not {proof.task_id}")
    if header.kind != "receipt" or header.records != 1:
        raise ReceiptError("receipt_batch", where, "a receipt is alone in a batch of kind receipt")
    if header.manifest_sha256 != receipt.manifest_sha256:
        raise ReceiptError("receipt_batch", where, "the batch header names another manifest")
    if header.batch_hash != leaf_hash(record).hex():
        raise InclusionError("record_in_batch", where, "the receipt's hash is not the batch hash")
    verify_batch_inclusion(proof.receipt_batch, checkpoint)
    listed = {b.seq: b.batch_hash for b in receipt.batches}
    proved = {b.header.seq: b for b in proof.batches}
    for seq, batch_hash in listed.items():
        inclusion = proved.get(seq)
        if inclusion is None:
            raise InclusionError("receipt_batches", Place(batch_seq=seq), "the receipt lists it; the proof omits it")
        if inclusion.header.batch_hash != batch_hash or inclusion.header.kind != "assets":
            raise InclusionError(
                "receipt_batches", Place(batch_seq=seq), "its header differs from what the receipt lists"
            )
        verify_batch_inclusion(inclusion, checkpoint)
    if set(proved) - set(listed):
        extra = sorted(set(proved) - set(listed))
        raise InclusionError(
            "receipt_batches", Place(batch_seq=extra[0]), "the proof carries a batch the receipt does not list"
        )
    if manifest is not None:
        digest = hashlib.sha256()
        for chunk in manifest:
            digest.update(chunk)
        if digest.hexdigest() != receipt.manifest_sha256:
            raise ReceiptError(
                "manifest_sha256",
                f"task {receipt.task_id}",
                f"the file hashes to {digest.hexdigest()}, the receipt records {receipt.manifest_sha256}",
            )
    return ReceiptVerified(receipt=receipt, batch_seq=header.seq, checkpoint=checkpoint)


def verify_consistency_proof(
    old_note: str, new_note: str, proof: ConsistencyProof, verifiers: Iterable[Verifier] | None
) -> tuple[Checkpoint, Checkpoint]:
    trusted = None if verifiers is None else list(verifiers)
    old = read_checkpoint(old_note, trusted, where="old checkpoint")
    new = read_checkpoint(new_note, trusted, where="new checkpoint")
    where = f"checkpoint {old.size} -> {new.size}"
    if old.origin != new.origin:
        raise ConsistencyError(
            "origin", where, f"the checkpoints are of different logs: {old.origin!r}, {new.origin!r}"
        )
    if (proof.old_size, proof.new_size) != (old.size, new.size):
        raise ConsistencyError("proof_sizes", where, f"the proof is for sizes {proof.old_size} -> {proof.new_size}")
    try:
        verify_consistency(old.size, new.size, old.root, new.root, _hashes(proof.proof, where))
    except ProofError as exc:
        raise ConsistencyError("consistency", where, f"the newer tree does not extend the older one ({exc})") from exc
    return old, new


def build_batch_inclusion(header: BatchHeader, tree_leaves: Sequence[bytes]) -> BatchInclusion:
    """``tree_leaves``: the leaves of the checkpointed tree (its size is their number)."""
    return BatchInclusion(header=header, tree_path=[p.hex() for p in inclusion_proof(tree_leaves, header.seq - 1)])


def build_entry_proof(
    *,
    entry_id: int | None,
    index: int,
    record: bytes,
    batch_leaves: Sequence[bytes],
    header: BatchHeader,
    tree_leaves: Sequence[bytes],
    checkpoint: str,
) -> EntryProof:
    return EntryProof(
        v=PROOF_VERSION,
        type="entry_proof",
        entry_id=entry_id,
        index=index,
        record=record.decode(),
        leaf_hash=batch_leaves[index].hex(),
        batch_path=[p.hex() for p in inclusion_proof(batch_leaves, index)],
        batch=build_batch_inclusion(header, tree_leaves),
        checkpoint=checkpoint,
    )


def build_receipt_proof(
    *,
    task_id: str,
    receipt: bytes,
    receipt_header: BatchHeader,
    batch_headers: Sequence[BatchHeader],
    tree_leaves: Sequence[bytes],
    checkpoint: str,
) -> ReceiptProof:
    return ReceiptProof(
        v=PROOF_VERSION,
        type="receipt_proof",
        task_id=task_id,
        receipt=receipt.decode(),
        receipt_batch=build_batch_inclusion(receipt_header, tree_leaves),
        batches=[build_batch_inclusion(h, tree_leaves) for h in batch_headers],
        checkpoint=checkpoint,
    )


def build_consistency_proof(
    tree_leaves: Sequence[bytes], old_size: int, old_checkpoint: str | None, new_checkpoint: str | None
) -> ConsistencyProof:
    return ConsistencyProof(
        v=PROOF_VERSION,
        type="consistency_proof",
        old_size=old_size,
        new_size=len(tree_leaves),
        proof=[p.hex() for p in consistency_proof(tree_leaves, old_size)],
        old_checkpoint=old_checkpoint,
        new_checkpoint=new_checkpoint,
    )
