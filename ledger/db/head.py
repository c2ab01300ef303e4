"""The chain head (the ``ledger_head`` row): reading it, locking it, moving it.

Every writer takes the head lock (``lock_head``) before it links batches (ledger.db.chain);
the lock is the row lock of the head row, so it lasts until the writer's transaction ends
and serialises linking, which is the only serial step of a commit.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.db.pool import Conn, Executor

__all__ = ["Head", "LockedHead", "get_head", "head_seq", "lock_head", "store_head"]


class Head(msgspec.Struct, frozen=True):
    """The head as auditors read it (``GET /audit/head``): the last batch and its chain hash."""

    seq: int
    chain_hash: str
    batch_hash: str | None
    committed_at: datetime | None


class LockedHead(msgspec.Struct, frozen=True):
    """Where the next batch links, read under the head lock (or computed under it by
    ``chain.append_batches``): valid until the transaction that holds the lock ends."""

    seq: int
    chain_hash: bytes


async def get_head(conn: Executor) -> Head:
    row = await conn.fetchrow(
        """
        SELECT h.seq, h.chain_hash, b.batch_hash, b.committed_at
        FROM ledger_head h LEFT JOIN ledger_batches b ON b.seq = h.seq
        WHERE h.id = 1
        """
    )
    assert row is not None, "ledger_head row missing: run migrations"
    return Head(
        seq=row["seq"],
        chain_hash=bytes(row["chain_hash"]).hex(),
        batch_hash=None if row["batch_hash"] is None else bytes(row["batch_hash"]).hex(),
        committed_at=row["committed_at"],
    )


async def head_seq(conn: Executor) -> int:
    """The head's sequence number, without locking it (a snapshot's view, in a transaction)."""
    seq = await conn.fetchval("SELECT seq FROM ledger_head WHERE id = 1")
    assert seq is not None, "ledger_head row missing: run migrations"
    return int(seq)


async def lock_head(conn: Conn) -> LockedHead:
    """Lock the head row for the rest of the transaction: linking is the only serial step."""
    row = await conn.fetchrow("SELECT seq, chain_hash FROM ledger_head WHERE id = 1 FOR UPDATE")
    assert row is not None, "ledger_head row missing: run migrations"
    return LockedHead(int(row["seq"]), bytes(row["chain_hash"]))


async def store_head(conn: Conn, head: LockedHead) -> None:
    """Move the head row (the caller holds the lock: ``chain.advance_head``)."""
    await conn.execute("UPDATE ledger_head SET seq = $1, chain_hash = $2 WHERE id = 1", head.seq, head.chain_hash)
