"""The imports a caller may see, newest first, a page at a time (GET /imports, /ui/imports)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ledger.db.pool import Executor

__all__ = ["ImportSummary", "list_imports"]


class ImportSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of a listing: what an import is and how it stands, without its batches."""

    task_id: str
    filename: str | None
    lab: str
    status: str
    dry_run: bool
    policy: str
    manifest_bytes: int
    rows_total: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    # The error's code when it failed (GET /imports/{task_id} has the whole error).
    error_code: str | None
    created_at: datetime
    finished_at: datetime | None


def _summary(row: Any) -> ImportSummary:
    error = row["error"]
    return ImportSummary(
        task_id=str(row["id"]),
        filename=row["filename"],
        lab=row["lab"],
        status=row["status"],
        dry_run=row["dry_run"],
        policy=row["policy_name"],
        manifest_bytes=row["manifest_bytes"],
        rows_total=row["rows_total"],
        rows_committed=row["rows_committed"],
        rows_duplicate=row["rows_duplicate"],
        rows_quarantined=row["rows_quarantined"],
        error_code=error.get("code") if isinstance(error, dict) else None,
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


async def list_imports(
    conn: Executor,
    *,
    labs: Sequence[str] | None,
    status: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[ImportSummary]:
    """Imports of ``labs`` (None: every lab) and ``status`` (None: any), newest first, created
    before the key ``before`` (created_at, id) of the previous page's last one. Walks
    imports_created_idx, or imports_lab_created_idx for a few labs."""
    rows = await conn.fetch(
        """
        SELECT id, filename, lab, status, dry_run, policy_name, manifest_bytes, rows_total, rows_committed,
               rows_duplicate, rows_quarantined, error, created_at, finished_at
        FROM imports
        WHERE ($1::text[] IS NULL OR lab = ANY($1::text[]))
          AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
        ORDER BY created_at DESC, id DESC
        LIMIT $5
        """,
        None if labs is None else list(labs),
        status,
        None if before is None else before[0],
        None if before is None else before[1],
        limit,
    )
    return [_summary(r) for r in rows]
