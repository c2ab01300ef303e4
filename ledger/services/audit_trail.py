"""The audit trail an auditor takes away: signing keys, checkpoints, entry, receipt and
consistency proofs, export bundles (what /audit and /imports/{id}/receipt serve).

Proofs read only what they need: the batch's entry leaf hashes (at most batch_rows_max) and
the tree's batch leaves (one per batch), never every record of the ledger.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from ledger import audit_log
from ledger.core.bundle import (
    BatchLine,
    BundleStart,
    CheckpointLine,
    CompactRange,
    EndLine,
    OutcomeLine,
    RecordLine,
    encode_line,
)
from ledger.core.proofs import (
    PROOF_VERSION,
    ConsistencyProof,
    EntryProof,
    ReceiptProof,
    build_consistency_proof,
    build_entry_proof,
    build_receipt_proof,
)
from ledger.core.records import GENESIS_PREV, BatchHeader, parse_receipt
from ledger.db import checkpoints as cp
from ledger.db import entries
from ledger.db.batches import HEADER_COLUMNS, batch_header, batches_between, chain_hash_at, header_of
from ledger.db.checkpoints import CheckpointSigning, StoredCheckpoint
from ledger.db.stored_outcomes import import_outcome_rows, stored_outcome
from ledger.errors import InvalidRequest, NotFound, Unavailable
from ledger.services.access import Principal, readable_import
from ledger.services.limits import CHECKPOINTS_PAGE_MAX

__all__ = [
    "BatchListing",
    "ListedEntry",
    "PublicKey",
    "StoredCheckpoint",
    "batch_listing",
    "consistency_proof",
    "create_checkpoint",
    "entry_proof",
    "export_bundle",
    "latest_checkpoint",
    "list_checkpoints",
    "public_keys",
    "receipt_proof",
    "request_checkpoint",
]

Pool: TypeAlias = "asyncpg.Pool[Any]"
_FETCH_ROWS = 10_000


class PublicKey(msgspec.Struct, frozen=True):
    name: str
    key_id: str
    verifier_key: str
    current: bool
    created_at: datetime


class ListedEntry(msgspec.Struct, frozen=True):
    entry_id: int
    index: int
    type: str  # the record's own "type": asset, receipt or review
    leaf_hash: str


class BatchListing(msgspec.Struct, frozen=True):
    """One batch: its header (as in proofs, without ``v``), stored chain hash and entries with
    the ids GET /audit/proofs/entries/{entry_id} takes."""

    header: BatchHeader
    chain_hash: str
    entries: list[ListedEntry]


# A batch's kind says the type of every record it may hold (docs/ledger-format.md §5).
_ENTRY_TYPE = {"assets": "asset", "receipt": "receipt", "review": "review"}


async def batch_listing(pool: Pool, seq: int) -> BatchListing:
    """Where an artefact names a batch and an entry index (a receipt proof, a review answer, a
    verification failure), this gives the entry's id and type."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await conn.fetchrow(f"SELECT {HEADER_COLUMNS}, chain_hash FROM ledger_batches WHERE seq = $1", seq)
        if row is None:
            raise NotFound("not_found", f"no batch {seq}")
        listed = await entries.batch_entry_ids(conn, seq)
    header = header_of(row)
    kind = _ENTRY_TYPE.get(header.kind, header.kind)
    return BatchListing(
        header=header,
        chain_hash=bytes(row["chain_hash"]).hex(),
        entries=[ListedEntry(entry_id=i, index=idx, type=kind, leaf_hash=leaf.hex()) for i, idx, leaf in listed],
    )


async def public_keys(pool: Pool, signing: CheckpointSigning | None) -> list[PublicKey]:
    current_key = signing.signer.verifier.encode() if signing else None
    keys = [
        PublicKey(
            name=k.name,
            key_id=k.key_id,
            verifier_key=k.verifier_key,
            current=k.verifier_key == current_key,
            created_at=k.created_at,
        )
        for k in await cp.signing_keys(pool)
    ]
    keys.sort(key=lambda k: not k.current)  # stable: current first, then newest first
    return keys


async def create_checkpoint(pool: Pool, signing: CheckpointSigning | None) -> StoredCheckpoint:
    checkpoint, _ = await request_checkpoint(pool, signing)
    return checkpoint


async def request_checkpoint(pool: Pool, signing: CheckpointSigning | None) -> tuple[StoredCheckpoint, bool]:
    """A checkpoint of the current head, and whether it was signed now (False: the latest one
    already stated this head with this key). Raises CheckpointRefused (500,
    ``checkpoint_refused``) when the stored tree is not the one the batch headers give."""
    if signing is None:
        raise Unavailable("no_signing_key", "this process has no checkpoint signing key configured")
    async with pool.acquire() as conn, audit_log.deferred():
        checkpoint, created = await cp.sign_head_created(conn, signing.signer, signing.origin)
        if created:
            audit_log.after_commit(cp.checkpoint_event(checkpoint))
        return checkpoint, created


async def latest_checkpoint(pool: Pool, signing: CheckpointSigning | None) -> StoredCheckpoint:
    latest = await cp.latest_checkpoint(pool)
    if latest is None:
        return await create_checkpoint(pool, signing)
    return latest


async def list_checkpoints(pool: Pool, size_from: int, size_to: int | None, limit: int) -> list[StoredCheckpoint]:
    if size_from < 0 or (size_to is not None and size_to < size_from):
        raise InvalidRequest("invalid_range", f"tree sizes from={size_from} to={size_to} do not form a range")
    if not 1 <= limit <= CHECKPOINTS_PAGE_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be 1..{CHECKPOINTS_PAGE_MAX}")
    return await cp.list_checkpoints(pool, size_from, size_to, limit)


async def _covering_checkpoint(pool: Pool, signing: CheckpointSigning | None, seq: int) -> StoredCheckpoint:
    latest = await cp.latest_checkpoint(pool)
    if latest is None or latest.tree_size < seq:
        latest = await create_checkpoint(pool, signing)
    return latest


async def entry_proof(pool: Pool, signing: CheckpointSigning | None, entry_id: int) -> EntryProof:
    entry = await entries.ledger_entry(pool, entry_id)
    if entry is None:
        raise NotFound("not_found", f"no ledger entry {entry_id}")
    seq = entry.batch_seq
    checkpoint = await _covering_checkpoint(pool, signing, seq)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        batch_leaves = await entries.batch_leaf_hashes(conn, seq)
        tree = await cp.tree_leaves(conn, checkpoint.tree_size)
        header = await batch_header(conn, seq)
    return build_entry_proof(
        entry_id=entry.id,
        index=entry.idx,
        record=entry.record,
        batch_leaves=batch_leaves,
        header=header,
        tree_leaves=tree,
        checkpoint=checkpoint.note,
    )


async def consistency_proof(
    pool: Pool, signing: CheckpointSigning | None, size_from: int, size_to: int | None
) -> ConsistencyProof:
    latest = await latest_checkpoint(pool, signing)
    to = latest.tree_size if size_to is None else size_to
    if not 0 <= size_from <= to or to > latest.tree_size:
        raise InvalidRequest(
            "invalid_range", f"sizes from={size_from} to={to} must satisfy 0 <= from <= to <= {latest.tree_size}"
        )
    leaves = await cp.tree_leaves(pool, to)
    old, new = await cp.checkpoint_at(pool, size_from), await cp.checkpoint_at(pool, to)
    return build_consistency_proof(
        leaves, size_from, None if old is None else old.note, None if new is None else new.note
    )


async def receipt_proof(
    pool: Pool, signing: CheckpointSigning | None, principal: Principal, task_id: str
) -> ReceiptProof:
    found = await readable_import(pool, principal, task_id)
    entry = await entries.receipt_entry(pool, found.id)
    if entry is None:
        why = "a dry run writes no receipt" if found.dry_run else f"the import is {found.status}"
        raise NotFound("no_receipt", f"import {task_id} has no receipt on the ledger: {why}")
    record = entry.record
    receipt = parse_receipt(record)
    checkpoint = await _covering_checkpoint(pool, signing, entry.batch_seq)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        tree = await cp.tree_leaves(conn, checkpoint.tree_size)
        receipt_header = await batch_header(conn, entry.batch_seq)
        headers = [await batch_header(conn, b.seq) for b in receipt.batches]
    return build_receipt_proof(
        task_id=task_id,
        receipt=record,
        receipt_header=receipt_header,
        batch_headers=headers,
        tree_leaves=tree,
        checkpoint=checkpoint.note,
    )


async def export_bundle(
    pool: Pool, signing: CheckpointSigning | None, size_from: int, size_to: int | None
) -> AsyncIterator[bytes]:
    """Check the range, then stream the bundle from one consistent snapshot."""
    latest = await latest_checkpoint(pool, signing)
    to = latest.tree_size if size_to is None else size_to
    if not 0 <= size_from <= to or to > latest.tree_size:
        raise InvalidRequest(
            "invalid_range", f"sizes from={size_from} to={to} must satisfy 0 <= from <= to <= {latest.tree_size}"
        )
    if await cp.checkpoint_at(pool, to) is None:
        raise InvalidRequest(
            "no_checkpoint", f"no checkpoint was issued at tree size {to}; pick one from /audit/checkpoints"
        )
    return _bundle_lines(pool, latest.origin, size_from, to)


async def _bundle_lines(pool: Pool, origin: str, size_from: int, size_to: int) -> AsyncIterator[bytes]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        prefix = CompactRange()
        for leaf in await cp.tree_leaves(conn, size_from):
            prefix.append(leaf)
        prev = GENESIS_PREV
        if size_from:
            prev = await chain_hash_at(conn, size_from)
        notes = await cp.checkpoint_notes(conn, size_from, size_to)
        yield encode_line(
            BundleStart(
                v=PROOF_VERSION,
                origin=origin,
                from_size=size_from,
                to_size=size_to,
                prefix=[n.hex() for n in prefix.nodes],
                prev_chain_hash=prev.hex(),
            )
        )
        for note in notes.get(size_from, ()):
            yield encode_line(CheckpointLine(note=note))
        batches, total = 0, 0
        out: list[bytes] = []
        async for b in batches_between(conn, size_from, size_to, prefetch=100):
            seq = b["seq"]
            out.append(encode_line(BatchLine(header=header_of(b), chain_hash=bytes(b["chain_hash"]).hex())))
            async for e in entries.batch_records(conn, seq, prefetch=_FETCH_ROWS):
                out.append(encode_line(RecordLine(seq=seq, idx=e[0], record=bytes(e[1]).decode())))
                total += 1
                if len(out) >= _FETCH_ROWS:
                    yield b"".join(out)
                    out = []
            if b["kind"] == "receipt" and b["import_id"] is not None:
                async for r in import_outcome_rows(conn, b["import_id"], prefetch=_FETCH_ROWS):
                    out.append(
                        encode_line(OutcomeLine(seq=seq, row=r[0], outcome=stored_outcome(r).decode(errors="replace")))
                    )
                    if len(out) >= _FETCH_ROWS:
                        yield b"".join(out)
                        out = []
            batches += 1
            for note in notes.get(seq, ()):
                out.append(encode_line(CheckpointLine(note=note)))
            if out:
                yield b"".join(out)
                out = []
        yield encode_line(EndLine(batches=batches, records=total))
