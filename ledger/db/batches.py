"""Batch headers as stored: the ``ledger_batches`` columns that make a header, and the header
(docs/ledger-format.md §5) a row of them gives back."""

from __future__ import annotations

from typing import Any

import asyncpg
from asyncpg.cursor import CursorFactory

from ledger.core import records
from ledger.db.pool import Conn, Executor

__all__ = ["HEADER_COLUMNS", "batch_header", "batches_between", "chain_hash_at", "header_of"]

HEADER_COLUMNS = "seq, kind, batch_hash, records, manifest_sha256, policy_sha256, committed_at"


def header_of(row: Any) -> records.BatchHeader:
    """The header of a row holding at least ``HEADER_COLUMNS``."""
    return records.BatchHeader(
        seq=row["seq"],
        kind=row["kind"],
        batch_hash=bytes(row["batch_hash"]).hex(),
        records=row["records"],
        manifest_sha256=row["manifest_sha256"],
        policy_sha256=row["policy_sha256"],
        committed_at=records.format_time(row["committed_at"]),
    )


async def batch_header(conn: Executor, seq: int) -> records.BatchHeader:
    """The header of batch ``seq`` (which must exist)."""
    row = await conn.fetchrow(f"SELECT {HEADER_COLUMNS} FROM ledger_batches WHERE seq = $1", seq)
    return header_of(row)


async def chain_hash_at(conn: Executor, seq: int) -> bytes:
    """The chain hash after batch ``seq`` (which must exist): where tree size ``seq`` links on."""
    return bytes(await conn.fetchval("SELECT chain_hash FROM ledger_batches WHERE seq = $1", seq))


def batches_between(conn: Conn, size_from: int, size_to: int, *, prefetch: int = 100) -> CursorFactory[asyncpg.Record]:
    """A cursor (iterate it inside a transaction) over batches ``size_from`` < seq <= ``size_to``
    in seq order: rows of ``HEADER_COLUMNS`` (``header_of``), ``chain_hash`` and ``import_id``."""
    return conn.cursor(
        f"SELECT {HEADER_COLUMNS}, chain_hash, import_id FROM ledger_batches WHERE seq > $1 AND seq <= $2 ORDER BY seq",
        size_from,
        size_to,
        prefetch=prefetch,
    )
