"""What an import leaves in the ledger, without what legitimately differs between runs, so
that two runs of the same manifests (crashed and resumed, or with other chunk sizes or staging
processes) can be compared, or pinned by a digest.

Batch times, chain hashes and task ids differ between two runs of the same manifest; the
records, leaf hashes, batch hashes, row outcomes, receipt figures and projected assets must not.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import msgspec

from ledger.db import projection
from ledger.db.pool import Conn

__all__ = ["digest", "ledger_content"]


async def ledger_content(conn: Conn) -> dict[str, Any]:
    """The ledger's entries, batches, receipts, row outcomes and current assets on ``conn``,
    as plain JSON-able lists, less batch times, chain hashes and task ids."""
    # The current-state projection first, brought up to date: a worker's projector may or may
    # not have applied it yet (a race that made two equal runs compare unequal), and what it
    # applies does not depend on who applies it.
    await projection.apply_pending(conn, yield_seconds_max=0)
    entries = await conn.fetch(
        """
        SELECT batch_seq, idx, record, leaf_hash, asset_id, grant_code, revision, row_no
        FROM ledger_entries WHERE kind = 'asset' ORDER BY batch_seq, idx
        """
    )
    # A receipt's batch hash covers its task id, which differs between runs.
    batches = await conn.fetch(
        """
        SELECT seq, kind, CASE WHEN kind = 'receipt' THEN NULL ELSE batch_hash END, records
        FROM ledger_batches ORDER BY seq
        """
    )
    receipts = []
    for row in await conn.fetch("SELECT record FROM ledger_entries WHERE kind = 'receipt' ORDER BY batch_seq"):
        receipt = msgspec.json.decode(row["record"])
        receipt.pop("task_id", None)
        receipts.append(receipt)
    outcomes = await conn.fetch(
        """
        SELECT r.row_no, r.outcome, r.asset_id, r.grant_code, r.revision, r.record_hash, r.errors, r.cells
        FROM import_rows r JOIN imports i ON i.id = r.import_id
        ORDER BY i.created_at, r.row_no
        """
    )
    assets = await conn.fetch("SELECT asset_id, grant_code, revision, leaf_hash, data FROM assets ORDER BY 1, 2")

    def plain(rows: list[Any]) -> list[list[Any]]:
        return [[v.hex() if isinstance(v, bytes) else v for v in r.values()] for r in rows]

    return {
        "entries": plain(entries),
        "batches": plain(batches),
        "receipts": receipts,
        "outcomes": plain(outcomes),
        "assets": plain(assets),
    }


def digest(content: dict[str, Any]) -> str:
    """A SHA-256 hex digest of ``content`` (from ledger_content), to pin it in a test."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()
