"""Import records: creation with idempotency, status and progress, row outcomes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ledger import audit_log
from ledger.db import import_statuses as statuses
from ledger.db.pool import Conn, Executor

__all__ = [
    "TERMINAL_STATUSES",
    "ImportRecord",
    "RowOutcome",
    "StagingCheckpoint",
    "find_by_key",
    "get_import",
    "hand_back",
    "insert_import",
    "iter_quarantined",
    "learn_finalize_cost",
    "list_rows",
    "mark_failed",
    "record_attempt",
    "reset_checkpoint",
    "save_checkpoint",
    "set_status",
    "waiting_counts",
]

TERMINAL_STATUSES = frozenset(statuses.TERMINAL)


class ImportRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    idempotency_key: str
    lab: str
    policy_name: str
    policy_version: str
    policy_sha256: str
    manifest_sha256: str
    manifest_bytes: int
    filename: str | None
    spool_path: str
    dry_run: bool
    status: str
    rows_total: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    bytes_read: int
    error: dict[str, Any] | None
    accepted_body: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: dict[str, Any] = {}
    format: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = []
    checkpoint: dict[str, Any] | None = None
    finalizing_at: datetime | None = None
    finalize_seconds_per_row: float | None = None
    attempts: list[dict[str, Any]] = []
    retry_at: datetime | None = None
    header: list[str] | None = None  # the manifest's header cells as written
    # The W3C traceparent of the request that recorded it, which the worker's spans continue.
    trace_context: str | None = None


class StagingCheckpoint(msgspec.Struct, kw_only=True):
    """How far staging got, committed together with the staged rows it describes."""

    rows: int = 0  # records staged so far (a prefix of the manifest)
    quarantined: int = 0
    bytes_read: int = 0
    last_row: int = 0  # row number of the last staged record; a resume skips up to it
    complete: bool = False  # every record is staged; a resume goes straight to finalize
    resumed_at: list[int] = []  # rows already staged at each resume, for the logs and tests


_COLUMNS = ", ".join(ImportRecord.__struct_fields__)


def _record(row: asyncpg.Record) -> ImportRecord:
    return ImportRecord(**dict(row))


async def insert_import(conn: Executor, record: ImportRecord, submitted_by: uuid.UUID | None) -> bool:
    """Insert unless (lab, idempotency_key) exists; True when this call created it."""
    created = await conn.fetchval(
        """
        INSERT INTO imports (id, idempotency_key, lab, policy_name, policy_version, policy_sha256,
                             manifest_sha256, manifest_bytes, filename, spool_path, dry_run, status,
                             accepted_body, submitted_by, created_at, options, trace_context)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', $12, $13, $14, $15, $16)
        ON CONFLICT (lab, idempotency_key) DO NOTHING
        RETURNING true
        """,
        record.id,
        record.idempotency_key,
        record.lab,
        record.policy_name,
        record.policy_version,
        record.policy_sha256,
        record.manifest_sha256,
        record.manifest_bytes,
        record.filename,
        record.spool_path,
        record.dry_run,
        record.accepted_body,
        submitted_by,
        record.created_at,
        record.options,
        record.trace_context,
    )
    return bool(created)


async def waiting_counts(conn: Executor, labs: list[str]) -> tuple[int, int]:
    """Imports queued for a worker: in all, and for any of ``labs``."""
    row = await conn.fetchrow(
        """
        SELECT count(*) AS queued, count(*) FILTER (WHERE lab = ANY($1::text[])) AS queued_lab
        FROM imports WHERE status = 'queued'
        """,
        labs,
    )
    assert row is not None
    return int(row["queued"]), int(row["queued_lab"])


async def get_import(conn: Executor, import_id: uuid.UUID) -> ImportRecord | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM imports WHERE id = $1", import_id)
    return None if row is None else _record(row)


async def find_by_key(conn: Executor, lab: str, key: str) -> ImportRecord | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM imports WHERE lab = $1 AND idempotency_key = $2", lab, key)
    return None if row is None else _record(row)


async def set_status(conn: Executor, import_id: uuid.UUID, status: str) -> None:
    """Move a running import on; a cancelled or finished one is left as it is."""
    await conn.execute(
        f"""
        UPDATE imports SET status = $2,
               started_at = CASE WHEN started_at IS NULL AND $2 <> 'queued' THEN now() ELSE started_at END,
               finished_at = CASE WHEN {statuses.terminal("$2")} THEN now() ELSE finished_at END,
               finalizing_at = CASE WHEN $2 = 'finalizing' THEN now() ELSE finalizing_at END
        WHERE id = $1 AND {statuses.not_terminal()}
        """,
        import_id,
        status,
    )


# The history the final step's cost is learned from: the latest finished imports of the same kind
# (a dry run writes no entries) big enough for the per-row cost to dominate the fixed one. The
# minimum is also the predicate of their index (imports_finalized_idx, migration 0009), and is
# written into the query as a literal so that the planner can see the index applies.
FINALIZE_HISTORY_IMPORTS = 10
FINALIZE_HISTORY_ROWS_MIN = 10_000


async def learn_finalize_cost(conn: Executor, import_id: uuid.UUID) -> float | None:
    """Record on the import what the final step cost a row in this server's recent imports
    (their final seconds over their rows, so the big ones weigh most); None with no history."""
    cost: float | None = await conn.fetchval(
        f"""
        UPDATE imports i SET finalize_seconds_per_row = (
            SELECT sum(extract(epoch FROM recent.finished_at - recent.finalizing_at)) / sum(recent.rows_total)
            FROM (SELECT p.finished_at, p.finalizing_at, p.rows_total FROM imports p
                  WHERE p.status = 'done' AND p.finalizing_at IS NOT NULL
                    AND p.rows_total >= {int(FINALIZE_HISTORY_ROWS_MIN)}
                    AND p.dry_run = i.dry_run AND p.id <> i.id
                  ORDER BY p.finished_at DESC LIMIT $2) recent)
        WHERE i.id = $1
        RETURNING i.finalize_seconds_per_row
        """,
        import_id,
        FINALIZE_HISTORY_IMPORTS,
    )
    return cost


async def save_checkpoint(conn: Executor, import_id: uuid.UUID, checkpoint: StagingCheckpoint) -> str:
    """Record staging progress (in the caller's transaction, with the COPY it describes);
    returns the import's status, so the caller notices a cancel."""
    status: str = await conn.fetchval(
        """
        UPDATE imports SET checkpoint = $2, rows_total = $3, rows_quarantined = $4, bytes_read = $5
        WHERE id = $1
        RETURNING status
        """,
        import_id,
        msgspec.to_builtins(checkpoint),
        checkpoint.rows,
        checkpoint.quarantined,
        checkpoint.bytes_read,
    )
    return status


async def reset_checkpoint(conn: Executor, import_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE imports SET checkpoint = NULL, rows_total = 0, rows_quarantined = 0, bytes_read = 0 WHERE id = $1",
        import_id,
    )


async def mark_failed(conn: Executor, import_id: uuid.UUID, error: dict[str, Any]) -> None:
    """End the import failed, unless it already ended done or cancelled; the audit log hears of
    it the first time it fails."""
    ended = await conn.fetchrow(
        """
        WITH was AS (SELECT status FROM imports WHERE id = $1 FOR UPDATE)
        UPDATE imports SET status = 'failed', error = $2, finished_at = now(),
               rows_total = 0, rows_committed = 0, rows_duplicate = 0, rows_quarantined = 0
        FROM was
        WHERE id = $1 AND imports.status NOT IN ('cancelled', 'done')
        RETURNING imports.lab, imports.dry_run, was.status <> 'failed' AS newly
        """,
        import_id,
        error,
    )
    if ended is not None and ended["newly"]:
        fields = audit_log.LedgerFields(task_id=str(import_id), lab=ended["lab"], dry_run=ended["dry_run"])
        code = str(error.get("code", "internal"))
        failed = audit_log.event(
            audit_log.IMPORT_FAILED, outcome="failure", ledger=fields, error_code=code, provider="worker"
        )
        audit_log.after_commit(failed)


async def record_attempt(
    conn: Executor, import_id: uuid.UUID, error: dict[str, Any], *, retry_in_seconds: float | None
) -> int:
    """Append a failed attempt to a running import; with ``retry_in_seconds`` it waits in
    'retrying' until then. Returns the attempts failed so far (0: the import has ended)."""
    failed = await conn.fetchval(
        f"""
        UPDATE imports
           SET attempts = attempts || jsonb_build_array(jsonb_build_object(
                   'attempt', jsonb_array_length(attempts) + 1, 'error', $2::jsonb,
                   'failed_at', to_jsonb(clock_timestamp()),
                   'retry_at', to_jsonb(clock_timestamp() + make_interval(secs => $3)))),
               status = CASE WHEN $3 IS NULL THEN status ELSE 'retrying' END,
               retry_at = clock_timestamp() + make_interval(secs => $3)
         WHERE id = $1 AND {statuses.not_terminal()}
        RETURNING jsonb_array_length(attempts)
        """,
        import_id,
        error,
        retry_in_seconds,
    )
    return int(failed or 0)


async def record_header(
    conn: Executor, import_id: uuid.UUID, *, header: list[str], fmt: dict[str, Any], warnings: list[dict[str, Any]]
) -> None:
    """What reading the file's header found; the import is then validating its rows."""
    await conn.execute(
        f"""
        UPDATE imports SET header = $2, format = $3, warnings = $4, status = 'validating'
        WHERE id = $1 AND {statuses.not_terminal()}
        """,
        import_id,
        header,
        fmt,
        warnings,
    )


async def status_of(conn: Executor, import_id: uuid.UUID) -> str | None:
    status = await conn.fetchval("SELECT status FROM imports WHERE id = $1", import_id)
    return None if status is None else str(status)


async def cancel(conn: Executor, import_id: uuid.UUID) -> bool:
    """Cancel an import that has not ended; False when it had. Finalisation holds this row's
    lock for its whole transaction, so a cancel either lands before it (the worker then rolls
    back) or sees 'done'."""
    cancelled = await conn.fetchval(
        f"""
        UPDATE imports SET status = 'cancelled', finished_at = now(),
               error = jsonb_build_object('code', 'cancelled', 'message', 'cancelled on request')
        WHERE id = $1 AND {statuses.not_terminal()}
        RETURNING true
        """,
        import_id,
    )
    return bool(cancelled)


async def batches_of(conn: Executor, import_id: uuid.UUID) -> list[asyncpg.Record]:
    """The ledger batches an import produced, in chain order."""
    return await conn.fetch(
        "SELECT seq, kind, batch_hash, chain_hash, records FROM ledger_batches WHERE import_id = $1 ORDER BY seq",
        import_id,
    )


async def projection_applied_seq(conn: Executor) -> int | None:
    """The last batch the current-state projection (GET /assets) has applied."""
    seq = await conn.fetchval("SELECT applied_seq FROM assets_projection WHERE id = 1")
    return None if seq is None else int(seq)


async def hand_back(conn: Executor, import_id: uuid.UUID) -> None:
    """A stopping worker gives its running import back to the queue: 'queued' again (its
    checkpoint stays, so whoever picks it up resumes where it got to)."""
    await conn.execute(
        f"UPDATE imports SET status = 'queued' WHERE id = $1 AND {statuses.not_terminal()}",
        import_id,
    )


class RowOutcome(msgspec.Struct, frozen=True):
    row: int
    outcome: str
    key: list[str] | None
    revision: int | None
    errors: list[dict[str, str]]


async def list_rows(
    conn: Executor, import_id: uuid.UUID, *, outcome: str | None, after: int, limit: int
) -> list[RowOutcome]:
    # Rows that did not commit are few and sit in the outcome index (partial: the literal
    # "outcome <> 'committed'" is what lets the planner use it); the rest walk the key.
    if outcome is not None and outcome != "committed":
        which = "outcome <> 'committed' AND outcome = $2"
    else:
        which = "($2::text IS NULL OR outcome = $2)"
    rows = await conn.fetch(
        f"""
        SELECT row_no, outcome, asset_id, grant_code, revision, errors FROM import_rows
        WHERE import_id = $1 AND {which} AND row_no > $3
        ORDER BY row_no LIMIT $4
        """,
        import_id,
        outcome,
        after,
        limit,
    )
    return [
        RowOutcome(
            row=r["row_no"],
            outcome=r["outcome"],
            key=None if r["asset_id"] is None else [r["asset_id"], r["grant_code"]],
            revision=r["revision"],
            errors=r["errors"] or [],
        )
        for r in rows
    ]


async def iter_quarantined(
    conn: Conn, import_id: uuid.UUID, *, page: int = 5_000
) -> AsyncIterator[tuple[int, list[dict[str, str]], list[str]]]:
    """(row, errors, cells) of every quarantined row, in row order, a page at a time."""
    after = 0
    while True:
        rows = await conn.fetch(
            """
            SELECT row_no, errors, cells FROM import_rows
            WHERE import_id = $1 AND outcome = 'quarantined' AND row_no > $2
            ORDER BY row_no LIMIT $3
            """,
            import_id,
            after,
            page,
        )
        for r in rows:
            yield r["row_no"], r["errors"] or [], r["cells"] or []
        if len(rows) < page:
            return
        after = rows[-1]["row_no"]
