"""Reading the ledger back for auditors: the head, and full verification from stored bytes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import msgspec

from ledger.core import records
from ledger.core.verify import ChainVerifier, StoredBatch, StoredEntry, VerifyReport
from ledger.db.ledger_store import outcome_bytes
from ledger.db.pool import Conn, Executor

__all__ = ["Head", "get_head", "verify_ledger"]


class Head(msgspec.Struct, frozen=True):
    seq: int
    chain_hash: str
    batch_hash: str | None
    committed_at: datetime | None


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


async def verify_ledger(conn: Conn) -> VerifyReport:
    """Recompute every record hash, batch root, chain link and receipt from the stored rows."""
    verifier = ChainVerifier()
    async for batch in _stored_batches(conn):
        if verifier.feed(batch) is not None:
            break
    return verifier.report()


async def _stored_batches(conn: Conn) -> AsyncIterator[StoredBatch]:
    # Per import: the row number of the last committed row already matched to an entry,
    # so each asset batch is compared with the next slice of the receipt's committed rows.
    last_row: dict[uuid.UUID, int] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        batches = conn.cursor(
            """
            SELECT seq, kind, batch_hash, records, manifest_sha256, policy_sha256, committed_at,
                   chain_hash, import_id
            FROM ledger_batches ORDER BY seq
            """,
            prefetch=100,
        )
        async for b in batches:
            header = records.BatchHeader(
                seq=b["seq"],
                kind=b["kind"],
                batch_hash=bytes(b["batch_hash"]).hex(),
                records=b["records"],
                manifest_sha256=b["manifest_sha256"],
                policy_sha256=b["policy_sha256"],
                committed_at=records.format_time(b["committed_at"]),
            )
            entries = [
                StoredEntry(idx=e["idx"], record=bytes(e["record"]), leaf_hash=bytes(e["leaf_hash"]))
                for e in await conn.fetch(
                    "SELECT idx, record, leaf_hash FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx",
                    b["seq"],
                )
            ]
            expected: list[bytes] | None = None
            outcomes: list[bytes] | None = None
            import_id = b["import_id"]
            if b["kind"] == "assets" and import_id is not None:
                rows = await conn.fetch(
                    """
                    SELECT row_no, record_hash FROM import_rows
                    WHERE import_id = $1 AND outcome = 'committed' AND row_no > $2
                    ORDER BY row_no LIMIT $3
                    """,
                    import_id,
                    last_row.get(import_id, 0),
                    b["records"],
                )
                expected = [bytes(r["record_hash"]) for r in rows]
                if rows:
                    last_row[import_id] = rows[-1]["row_no"]
            elif b["kind"] == "receipt" and import_id is not None:
                outcomes = [
                    outcome_bytes(r)
                    for r in await conn.fetch(
                        """
                        SELECT row_no, outcome, record_hash, errors, cells FROM import_rows
                        WHERE import_id = $1 ORDER BY row_no
                        """,
                        import_id,
                    )
                ]
                last_row.pop(import_id, None)
            yield StoredBatch(
                header=header,
                chain_hash=bytes(b["chain_hash"]),
                entries=entries,
                expected_leaves=expected,
                outcomes=outcomes,
            )
