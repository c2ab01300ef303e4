"""Linking batches onto the chain: the one place every writer appends through.

Whoever appends takes the head lock (``head.lock_head``), links and inserts its batch headers
(``append_batches``, as many calls as it needs within the transaction) and finally moves the
head (``advance_head``). Hooks that must see every new head (checkpoint signing) belong in
``advance_head``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec

from ledger.core import records
from ledger.db import checkpoints
from ledger.db.head import LockedHead, store_head
from ledger.db.pool import Conn

__all__ = ["NewBatch", "advance_head", "append_batches"]

_INSERT_BATCH = """
INSERT INTO ledger_batches (seq, kind, batch_hash, records, manifest_sha256, policy_sha256,
                            committed_at, chain_hash, import_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


class NewBatch(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    root: bytes
    records: int
    manifest_sha256: str | None
    policy_sha256: str | None
    import_id: uuid.UUID | None


async def append_batches(conn: Conn, head: LockedHead, batches: Sequence[NewBatch], now: datetime) -> LockedHead:
    """Link ``batches`` after ``head`` and insert their headers; returns the new (unsaved) head."""
    seq, prev = head.seq, head.chain_hash
    rows = []
    headers = []
    committed_at = records.format_time(now)
    for batch in batches:
        seq += 1
        header = records.BatchHeader(
            seq=seq,
            kind=batch.kind,
            batch_hash=batch.root.hex(),
            records=batch.records,
            manifest_sha256=batch.manifest_sha256,
            policy_sha256=batch.policy_sha256,
            committed_at=committed_at,
        )
        headers.append(header)
        prev = records.chain_hash(prev, records.encode_header(header))
        rows.append(
            (
                seq,
                batch.kind,
                batch.root,
                batch.records,
                batch.manifest_sha256,
                batch.policy_sha256,
                now,
                prev,
                batch.import_id,
            )
        )
    if rows:
        await conn.executemany(_INSERT_BATCH, rows)
        await checkpoints.record_tree_leaves(conn, headers)
    return LockedHead(seq, prev)


async def advance_head(conn: Conn, head: LockedHead, signing: checkpoints.CheckpointSigning | None) -> None:
    await store_head(conn, head)
    # Signed under the head lock, in the committing transaction: every head gets a checkpoint.
    await checkpoints.after_advance(conn, signing)
