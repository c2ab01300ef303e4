"""Reads of ``ledger_entries`` for proofs and export bundles: one entry, a batch's leaf hashes,
an import's receipt entry, a batch's records in order, a batch's entry ids."""

from __future__ import annotations

import uuid

import asyncpg
import msgspec
from asyncpg.cursor import CursorFactory

from ledger.db.pool import Conn, Executor

__all__ = [
    "LedgerEntry",
    "ReceiptEntry",
    "batch_entry_ids",
    "batch_leaf_hashes",
    "batch_records",
    "ledger_entry",
    "receipt_entry",
]


class LedgerEntry(msgspec.Struct, frozen=True):
    id: int
    batch_seq: int
    idx: int
    record: bytes
    leaf_hash: bytes


class ReceiptEntry(msgspec.Struct, frozen=True):
    record: bytes
    batch_seq: int


async def ledger_entry(conn: Executor, entry_id: int) -> LedgerEntry | None:
    row = await conn.fetchrow(
        "SELECT id, batch_seq, idx, record, leaf_hash FROM ledger_entries WHERE id = $1", entry_id
    )
    if row is None:
        return None
    return LedgerEntry(
        id=row["id"],
        batch_seq=row["batch_seq"],
        idx=row["idx"],
        record=bytes(row["record"]),
        leaf_hash=bytes(row["leaf_hash"]),
    )


async def batch_leaf_hashes(conn: Executor, seq: int) -> list[bytes]:
    """The leaf hashes of batch ``seq``'s entries in index order."""
    # One value instead of a row per entry: a batch has up to batch_rows_max leaves.
    packed = await conn.fetchval(
        "SELECT string_agg(leaf_hash, ''::bytea ORDER BY idx) FROM ledger_entries WHERE batch_seq = $1", seq
    )
    return [packed[i : i + 32] for i in range(0, len(packed), 32)]


async def receipt_entry(conn: Executor, import_id: uuid.UUID) -> ReceiptEntry | None:
    """The receipt record an import wrote on the ledger, and its batch; None when it wrote none."""
    # Through the import's batches (ledger_batches_import_idx) to the receipt batch's one entry:
    # ledger_entries has no index on import_id, and a scan of it took 1.4 s (p95 of the load
    # test's receipts) at 2.2 million entries.
    row = await conn.fetchrow(
        """
        SELECT e.record, e.batch_seq
          FROM ledger_batches b JOIN ledger_entries e ON e.batch_seq = b.seq AND e.idx = 0
         WHERE b.import_id = $1 AND b.kind = 'receipt' AND e.kind = 'receipt' AND e.import_id = $1
        """,
        import_id,
    )
    return None if row is None else ReceiptEntry(record=bytes(row["record"]), batch_seq=row["batch_seq"])


def batch_records(conn: Conn, seq: int, *, prefetch: int) -> CursorFactory[asyncpg.Record]:
    """A cursor (iterate it inside a transaction) over batch ``seq``'s entries in index order:
    rows of (idx, record)."""
    return conn.cursor(
        "SELECT idx, record FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx", seq, prefetch=prefetch
    )


async def batch_entry_ids(conn: Executor, seq: int) -> list[tuple[int, int, bytes]]:
    """(entry id, index, leaf hash) of every entry of batch ``seq``, in index order."""
    rows = await conn.fetch("SELECT id, idx, leaf_hash FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx", seq)
    return [(r["id"], r["idx"], bytes(r["leaf_hash"])) for r in rows]
