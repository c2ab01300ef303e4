"""Connectors and their syncs (migration 0016): the statements, one per question."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from ledger.db.pool import Conn, Executor

__all__ = [
    "ConnectorRow",
    "SyncRow",
    "advance_cursor",
    "attach_import",
    "fail_stale",
    "finish_sync",
    "get_connector",
    "insert_sync",
    "list_connectors",
    "list_syncs",
    "mark_run",
    "scheduled_connectors",
    "set_status",
    "upsert_connector",
]


class ConnectorRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    lab: str
    definition: dict[str, Any]
    schedule: str | None
    scheduled: bool
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    cursor: dict[str, Any] | None
    cursor_updated_at: datetime | None
    last_run_at: datetime | None


class SyncRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    connector: str
    lab: str
    origin: str
    status: str
    import_id: uuid.UUID | None
    import_status: str | None
    manifest_sha256: str | None
    records: int
    fetched: int
    skipped: int
    pages: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    cursor_from: str | None
    cursor_to: dict[str, Any] | None
    started_at: datetime
    finished_at: datetime | None


_CONNECTOR_COLUMNS = (
    "name, lab, definition, schedule, scheduled, created_by, created_at, updated_at, cursor, "
    "cursor_updated_at, last_run_at"
)
_SYNC_COLUMNS = (
    "s.id, s.connector, s.lab, s.origin, s.status, s.import_id, i.status AS import_status, s.manifest_sha256, "
    "s.records, s.fetched, s.skipped, s.pages, s.errors, s.problems, s.cursor_from, s.cursor_to, s.started_at, "
    "s.finished_at"
)


def _connector(row: Any) -> ConnectorRow:
    return ConnectorRow(**dict(row))


def _sync(row: Any) -> SyncRow:
    return SyncRow(**dict(row))


async def upsert_connector(
    conn: Executor,
    *,
    name: str,
    lab: str,
    definition: dict[str, Any],
    schedule: str | None,
    scheduled: bool,
    created_by: uuid.UUID,
) -> tuple[bool, ConnectorRow]:
    """Register a source, or replace the definition of one of the same lab (its cursor and
    syncs stay). ``scheduled`` only ever turns on here: a pull never unschedules a source that
    `ledger connector add` registered."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO connectors AS c (name, lab, definition, schedule, scheduled, created_by)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (name) DO UPDATE
           SET definition = EXCLUDED.definition, schedule = EXCLUDED.schedule,
               scheduled = c.scheduled OR EXCLUDED.scheduled,
               created_by = CASE WHEN EXCLUDED.scheduled THEN EXCLUDED.created_by ELSE c.created_by END,
               updated_at = now()
         WHERE c.lab = EXCLUDED.lab
        RETURNING {_CONNECTOR_COLUMNS}, (xmax = 0) AS created
        """,
        name,
        lab,
        definition,
        schedule,
        scheduled,
        created_by,
    )
    if row is None:  # the name is another lab's
        existing = await get_connector(conn, name)
        assert existing is not None
        return False, existing
    values = dict(row)
    created = bool(values.pop("created"))
    return created, ConnectorRow(**values)


async def get_connector(conn: Executor, name: str) -> ConnectorRow | None:
    row = await conn.fetchrow(f"SELECT {_CONNECTOR_COLUMNS} FROM connectors WHERE name = $1", name)
    return None if row is None else _connector(row)


async def list_connectors(conn: Executor, labs: list[str] | None) -> list[tuple[ConnectorRow, SyncRow | None]]:
    """Every source (of ``labs``, unless None), each with its latest sync."""
    rows = await conn.fetch(
        f"""
        SELECT {", ".join("c." + c.strip() for c in _CONNECTOR_COLUMNS.split(","))},
               to_jsonb(last.*) AS last_sync
          FROM connectors c
          LEFT JOIN LATERAL (
                SELECT {_SYNC_COLUMNS}
                  FROM connector_syncs s LEFT JOIN imports i ON i.id = s.import_id
                 WHERE s.connector = c.name
                 ORDER BY s.started_at DESC, s.id DESC
                 LIMIT 1) last ON true
         WHERE $1::text[] IS NULL OR c.lab = ANY($1::text[])
         ORDER BY c.name
        """,
        labs,
    )
    out = []
    for row in rows:
        values = dict(row)
        last = values.pop("last_sync")
        out.append((ConnectorRow(**values), None if last is None else msgspec.convert(last, SyncRow, strict=False)))
    return out


async def list_syncs(conn: Executor, name: str, limit: int) -> list[SyncRow]:
    rows = await conn.fetch(
        f"""
        SELECT {_SYNC_COLUMNS}
          FROM connector_syncs s LEFT JOIN imports i ON i.id = s.import_id
         WHERE s.connector = $1
         ORDER BY s.started_at DESC, s.id DESC
         LIMIT $2
        """,
        name,
        limit,
    )
    return [_sync(r) for r in rows]


async def get_sync(conn: Executor, sync_id: uuid.UUID) -> SyncRow | None:
    row = await conn.fetchrow(
        f"SELECT {_SYNC_COLUMNS} FROM connector_syncs s LEFT JOIN imports i ON i.id = s.import_id WHERE s.id = $1",
        sync_id,
    )
    return None if row is None else _sync(row)


async def insert_sync(
    conn: Executor,
    *,
    sync_id: uuid.UUID,
    connector: str,
    lab: str,
    origin: str,
    status: str,
    requested_by: uuid.UUID | None,
    cursor_from: str | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO connector_syncs (id, connector, lab, origin, status, requested_by, cursor_from)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        """,
        sync_id,
        connector,
        lab,
        origin,
        status,
        requested_by,
        cursor_from,
    )


async def finish_sync(conn: Executor, sync_id: uuid.UUID, result: dict[str, Any]) -> None:
    """Record how a sync ended: ``result`` holds status, records, fetched, skipped, pages,
    errors, problems, cursor_from, cursor_to and manifest_sha256."""
    await conn.execute(
        """
        UPDATE connector_syncs
           SET status = $2, records = $3, fetched = $4, skipped = $5, pages = $6, errors = $7,
               problems = $8, cursor_from = $9, cursor_to = $10, manifest_sha256 = $11,
               finished_at = clock_timestamp()
         WHERE id = $1
        """,
        sync_id,
        result["status"],
        result["records"],
        result["fetched"],
        result["skipped"],
        result["pages"],
        result["errors"],
        result["problems"],
        result["cursor_from"],
        result["cursor_to"],
        result["manifest_sha256"],
    )


async def set_status(conn: Executor, sync_id: uuid.UUID, status: str) -> None:
    await conn.execute(
        "UPDATE connector_syncs SET status = $2, finished_at = clock_timestamp() WHERE id = $1", sync_id, status
    )


async def attach_import(conn: Conn, sync_id: uuid.UUID, import_id: uuid.UUID, *, created: bool) -> None:
    """The sync's manifest became import ``import_id``: link them and, for a new import, give it
    the ``source`` its receipt will record (in the transaction that inserts the import, before
    any worker can see it)."""
    await conn.execute("UPDATE connector_syncs SET import_id = $2 WHERE id = $1", sync_id, import_id)
    if created:
        await conn.execute(
            """
            UPDATE imports i
               SET source = jsonb_build_object(
                       'connector', s.connector,
                       'sync_id', s.id::text,
                       'cursor_from', s.cursor_from,
                       'cursor_to', s.cursor_to -> 'value',
                       'pages', s.pages)
              FROM connector_syncs s
             WHERE s.id = $1 AND i.id = $2
            """,
            sync_id,
            import_id,
        )


async def advance_cursor(conn: Conn, import_id: uuid.UUID) -> None:
    """In the transaction that commits the import: the source's cursor moves to where its sync's
    data ends. Never before (a sync whose import failed leaves the cursor where it was)."""
    await conn.execute(
        """
        UPDATE connectors c
           SET cursor = s.cursor_to, cursor_updated_at = clock_timestamp()
          FROM connector_syncs s
         WHERE s.import_id = $1 AND c.name = s.connector AND s.cursor_to IS NOT NULL
        """,
        import_id,
    )


async def fail_stale(conn: Executor, connector: str, error: dict[str, Any]) -> int:
    """Syncs left 'running' by a worker that died: called by the one holding the source's lock,
    so no other sync of it is really running."""
    result = await conn.execute(
        """
        UPDATE connector_syncs
           SET status = 'failed', errors = errors || jsonb_build_array($2::jsonb), finished_at = clock_timestamp()
         WHERE connector = $1 AND status = 'running'
        """,
        connector,
        error,
    )
    return int(result.split()[-1])


async def scheduled_connectors(conn: Executor) -> list[tuple[str, str, datetime | None, datetime]]:
    """(name, schedule, last run, registered at) of every source the worker runs on a schedule."""
    rows = await conn.fetch(
        "SELECT name, schedule, last_run_at, created_at FROM connectors "
        "WHERE scheduled AND schedule IS NOT NULL ORDER BY name"
    )
    return [(r["name"], r["schedule"], r["last_run_at"], r["created_at"]) for r in rows]


async def mark_run(conn: Executor, names: list[str]) -> None:
    await conn.execute("UPDATE connectors SET last_run_at = now() WHERE name = ANY($1::text[])", names)
