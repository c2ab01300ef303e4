"""What the audit API does: keys, checkpoints, proofs, receipts, export bundles.

Proofs read only what they need: the batch's entry leaf hashes (at most batch_rows_max) and
the tree's batch leaves (one per batch), never every record of the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

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
from ledger.db.ledger_store import outcome_bytes
from ledger.errors import InvalidRequest, NotFound, Unavailable
from ledger.services.access import Principal, require_lab

__all__ = [
    "PublicKey",
    "consistency_proof",
    "create_checkpoint",
    "entry_proof",
    "export_bundle",
    "latest_checkpoint",
    "list_checkpoints",
    "public_keys",
    "receipt_proof",
]

Pool: TypeAlias = "asyncpg.Pool[Any]"
_FETCH_ROWS = 10_000
CHECKPOINTS_PAGE_MAX = 1000


class PublicKey(msgspec.Struct, frozen=True):
    name: str
    key_id: str
    verifier_key: str
    current: bool
    created_at: datetime


async def public_keys(pool: Pool) -> list[PublicKey]:
    current = cp.current_signer()
    current_key = current[0].verifier.encode() if current else None
    rows = await pool.fetch("SELECT name, key_id, verifier_key, created_at FROM signing_keys ORDER BY created_at DESC")
    keys = [
        PublicKey(
            name=r["name"],
            key_id=r["key_id"],
            verifier_key=r["verifier_key"],
            current=r["verifier_key"] == current_key,
            created_at=r["created_at"],
        )
        for r in rows
    ]
    keys.sort(key=lambda k: not k.current)  # stable: current first, then newest first
    return keys


def _signer() -> tuple[Any, str]:
    current = cp.current_signer()
    if current is None:
        raise Unavailable("no_signing_key", "this process has no checkpoint signing key configured")
    return current


async def create_checkpoint(pool: Pool) -> cp.StoredCheckpoint:
    signer, origin = _signer()
    async with pool.acquire() as conn:
        return await cp.sign_head(conn, signer, origin)


async def latest_checkpoint(pool: Pool) -> cp.StoredCheckpoint:
    latest = await cp.latest_checkpoint(pool)
    if latest is None:
        return await create_checkpoint(pool)
    return latest


async def list_checkpoints(pool: Pool, size_from: int, size_to: int | None, limit: int) -> list[cp.StoredCheckpoint]:
    if size_from < 0 or (size_to is not None and size_to < size_from):
        raise InvalidRequest("invalid_range", f"tree sizes from={size_from} to={size_to} do not form a range")
    if not 1 <= limit <= CHECKPOINTS_PAGE_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be 1..{CHECKPOINTS_PAGE_MAX}")
    return await cp.list_checkpoints(pool, size_from, size_to, limit)


async def _covering_checkpoint(pool: Pool, seq: int) -> cp.StoredCheckpoint:
    latest = await cp.latest_checkpoint(pool)
    if latest is None or latest.tree_size < seq:
        latest = await create_checkpoint(pool)
    return latest


async def _header(conn: Any, seq: int) -> BatchHeader:
    row = await conn.fetchrow(f"SELECT {cp.HEADER_COLUMNS} FROM ledger_batches WHERE seq = $1", seq)
    return cp.header_of(row)


async def entry_proof(pool: Pool, entry_id: int) -> EntryProof:
    entry = await pool.fetchrow(
        "SELECT id, batch_seq, idx, record, leaf_hash FROM ledger_entries WHERE id = $1", entry_id
    )
    if entry is None:
        raise NotFound("not_found", f"no ledger entry {entry_id}")
    seq = entry["batch_seq"]
    checkpoint = await _covering_checkpoint(pool, seq)
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One value instead of a row per entry: a batch has up to batch_rows_max leaves.
        packed = await conn.fetchval(
            "SELECT string_agg(leaf_hash, ''::bytea ORDER BY idx) FROM ledger_entries WHERE batch_seq = $1", seq
        )
        batch_leaves = [packed[i : i + 32] for i in range(0, len(packed), 32)]
        tree = await cp.tree_leaves(conn, checkpoint.tree_size)
        header = await _header(conn, seq)
    return build_entry_proof(
        entry_id=entry["id"],
        index=entry["idx"],
        record=bytes(entry["record"]),
        batch_leaves=batch_leaves,
        header=header,
        tree_leaves=tree,
        checkpoint=checkpoint.note,
    )


async def consistency_proof(pool: Pool, size_from: int, size_to: int | None) -> ConsistencyProof:
    latest = await latest_checkpoint(pool)
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


async def receipt_proof(pool: Pool, principal: Principal, task_id: str) -> ReceiptProof:
    try:
        import_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound("not_found", f"no import {task_id!r}") from None
    found = await pool.fetchrow("SELECT lab, status, dry_run FROM imports WHERE id = $1", import_id)
    if found is None:
        raise NotFound("not_found", f"no import {task_id!r}")
    require_lab(principal, found["lab"])
    entry = await pool.fetchrow(
        "SELECT record, batch_seq FROM ledger_entries WHERE import_id = $1 AND kind = 'receipt'", import_id
    )
    if entry is None:
        why = "a dry run writes no receipt" if found["dry_run"] else f"the import is {found['status']}"
        raise NotFound("no_receipt", f"import {task_id} has no receipt on the ledger: {why}")
    record = bytes(entry["record"])
    receipt = parse_receipt(record)
    checkpoint = await _covering_checkpoint(pool, entry["batch_seq"])
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        tree = await cp.tree_leaves(conn, checkpoint.tree_size)
        receipt_header = await _header(conn, entry["batch_seq"])
        headers = [await _header(conn, b.seq) for b in receipt.batches]
    return build_receipt_proof(
        task_id=task_id,
        receipt=record,
        receipt_header=receipt_header,
        batch_headers=headers,
        tree_leaves=tree,
        checkpoint=checkpoint.note,
    )


async def export_bundle(pool: Pool, size_from: int, size_to: int | None) -> AsyncIterator[bytes]:
    """Check the range, then stream the bundle from one consistent snapshot."""
    latest = await latest_checkpoint(pool)
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
            prev = bytes(await conn.fetchval("SELECT chain_hash FROM ledger_batches WHERE seq = $1", size_from))
        notes: dict[int, list[str]] = {}
        for r in await conn.fetch(
            "SELECT tree_size, note FROM checkpoints WHERE tree_size BETWEEN $1 AND $2 ORDER BY id",
            size_from,
            size_to,
        ):
            notes.setdefault(r["tree_size"], []).append(r["note"])
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
        async for b in conn.cursor(
            f"SELECT {cp.HEADER_COLUMNS}, chain_hash, import_id FROM ledger_batches "
            "WHERE seq > $1 AND seq <= $2 ORDER BY seq",
            size_from,
            size_to,
            prefetch=100,
        ):
            seq = b["seq"]
            out.append(encode_line(BatchLine(header=cp.header_of(b), chain_hash=bytes(b["chain_hash"]).hex())))
            async for e in conn.cursor(
                "SELECT idx, record FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx", seq, prefetch=_FETCH_ROWS
            ):
                out.append(encode_line(RecordLine(seq=seq, idx=e[0], record=bytes(e[1]).decode())))
                total += 1
                if len(out) >= _FETCH_ROWS:
                    yield b"".join(out)
                    out = []
            if b["kind"] == "receipt" and b["import_id"] is not None:
                async for r in conn.cursor(
                    """
                    SELECT row_no, outcome, record_hash, errors, cells FROM import_rows
                    WHERE import_id = $1 ORDER BY row_no
                    """,
                    b["import_id"],
                    prefetch=_FETCH_ROWS,
                ):
                    out.append(
                        encode_line(OutcomeLine(seq=seq, row=r[0], outcome=outcome_bytes(r).decode(errors="replace")))
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
