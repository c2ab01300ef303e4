"""Current state (latest revision per key) and the revision history of an asset."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ledger.db.pool import Executor

__all__ = ["AssetFilter", "AssetRow", "HistoryRow", "asset_history", "list_assets"]


class AssetFilter(msgspec.Struct, frozen=True, kw_only=True):
    grant_code: str | None = None
    category: str | None = None
    location: str | None = None
    # None: every lab; otherwise only these labs (a lab manager's own).
    labs: Sequence[str] | None = None


class AssetRow(msgspec.Struct, frozen=True):
    asset_id: str
    grant_code: str
    lab: str
    revision: int
    batch_seq: int
    leaf_hash: str
    data: dict[str, Any]
    updated_at: datetime


class HistoryRow(msgspec.Struct, frozen=True):
    asset_id: str
    grant_code: str
    revision: int
    batch_seq: int
    entry_id: int
    leaf_hash: str
    lab: str
    data: dict[str, Any]
    committed_at: datetime
    task_id: str | None


async def list_assets(
    conn: Executor,
    flt: AssetFilter,
    *,
    after: tuple[str, str] | None,
    limit: int,
) -> list[AssetRow]:
    rows = await conn.fetch(
        """
        SELECT asset_id, grant_code, lab, revision, batch_seq, leaf_hash, data, updated_at
        FROM assets
        WHERE ($1::text IS NULL OR grant_code = $1)
          AND ($2::text IS NULL OR category = $2)
          AND ($3::text IS NULL OR location = $3)
          AND ($4::text[] IS NULL OR lab = ANY($4))
          AND ($5::text IS NULL OR (asset_id, grant_code) > ($5, $6))
        ORDER BY asset_id, grant_code
        LIMIT $7
        """,
        flt.grant_code,
        flt.category,
        flt.location,
        None if flt.labs is None else list(flt.labs),
        None if after is None else after[0],
        None if after is None else after[1],
        limit,
    )
    return [
        AssetRow(
            asset_id=r["asset_id"],
            grant_code=r["grant_code"],
            lab=r["lab"],
            revision=r["revision"],
            batch_seq=r["batch_seq"],
            leaf_hash=bytes(r["leaf_hash"]).hex(),
            data=r["data"],
            updated_at=r["updated_at"],
        )
        for r in rows
    ]


async def asset_history(
    conn: Executor,
    asset_id: str,
    grant_code: str | None,
) -> list[HistoryRow]:
    rows = await conn.fetch(
        """
        SELECT e.asset_id, e.grant_code, e.revision, e.batch_seq, e.id, e.leaf_hash,
               convert_from(e.record, 'UTF8')::jsonb AS record, b.committed_at, e.import_id
        FROM ledger_entries e JOIN ledger_batches b ON b.seq = e.batch_seq
        WHERE e.kind = 'asset' AND e.asset_id = $1 AND ($2::text IS NULL OR e.grant_code = $2)
        ORDER BY e.grant_code, e.revision
        """,
        asset_id,
        grant_code,
    )
    return [
        HistoryRow(
            asset_id=r["asset_id"],
            grant_code=r["grant_code"],
            revision=r["revision"],
            batch_seq=r["batch_seq"],
            entry_id=r["id"],
            leaf_hash=bytes(r["leaf_hash"]).hex(),
            lab=r["record"]["lab"],
            data=r["record"]["data"],
            committed_at=r["committed_at"],
            task_id=None if r["import_id"] is None else str(r["import_id"]),
        )
        for r in rows
    ]
