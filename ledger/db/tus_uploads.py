"""Resumable (tus) uploads in progress: how much of each has arrived, whose it is, when it expires
(migration 0013), and the lock that lets one request at a time write to it.

The offset and the lock live here rather than beside the spooled file so that any API process
may serve the next request of an upload: the lock is a session-level advisory lock, held on a
connection of the caller's own for as long as its request writes (a process that dies drops its
connection, and with it the lock).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ledger.db.pool import Conn, Executor

__all__ = [
    "ExpiredUpload",
    "UploadRow",
    "complete",
    "delete_expired",
    "delete_upload",
    "expired_uploads",
    "get_upload",
    "insert_upload",
    "lock_upload",
    "receiving_paths",
    "set_received",
    "try_lock_upload",
    "unlock_upload",
]

# The first key of the two-key advisory locks taken on uploads: a space of their own, apart
# from the one-key locks of imports and admission (ledger.db.locks).
_LOCK_CLASS = int.from_bytes(b"tus1", "big", signed=True)


class UploadRow(msgspec.Struct, frozen=True, kw_only=True):
    id: uuid.UUID
    token_id: uuid.UUID
    lab: str
    length: int
    received: int
    # The Upload-Metadata header as the client sent it (HEAD answers with it), and the
    # submission's fields decoded from it (policy, lab, dry_run, reading options).
    metadata: str
    fields: dict[str, str]
    filename: str | None
    idempotency_key: str | None
    spool_path: str
    import_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    expired: bool = False


class ExpiredUpload(msgspec.Struct, frozen=True):
    id: uuid.UUID
    spool_path: str
    import_id: uuid.UUID | None


_COLUMNS = (
    "id, token_id, lab, length, received, metadata, fields, filename, idempotency_key, spool_path, import_id, "
    "created_at, expires_at"
)


def _row(record: asyncpg.Record) -> UploadRow:
    return UploadRow(**dict(record))


async def insert_upload(conn: Executor, row: UploadRow) -> None:
    await conn.execute(
        f"""
        INSERT INTO tus_uploads ({_COLUMNS})
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        """,
        row.id,
        row.token_id,
        row.lab,
        row.length,
        row.received,
        row.metadata,
        row.fields,
        row.filename,
        row.idempotency_key,
        row.spool_path,
        row.import_id,
        row.created_at,
        row.expires_at,
    )


async def get_upload(conn: Executor, upload_id: uuid.UUID) -> UploadRow | None:
    """The upload, with whether it has expired by the database's clock."""
    record = await conn.fetchrow(
        f"SELECT {_COLUMNS}, expires_at <= now() AS expired FROM tus_uploads WHERE id = $1", upload_id
    )
    return None if record is None else _row(record)


async def set_received(
    conn: Executor, upload_id: uuid.UUID, *, was: int, now: int, expiry_seconds: int
) -> datetime | None:
    """Move the offset from ``was`` to ``now`` and push the expiry back (an upload expires when
    abandoned, not while it moves). The new expiry, or None if the offset was not ``was``."""
    expires: datetime | None = await conn.fetchval(
        """
        UPDATE tus_uploads SET received = $3, expires_at = now() + make_interval(secs => $4)
        WHERE id = $1 AND received = $2 AND import_id IS NULL
        RETURNING expires_at
        """,
        upload_id,
        was,
        now,
        float(expiry_seconds),
    )
    return expires


async def complete(
    conn: Executor, upload_id: uuid.UUID, *, was: int, import_id: uuid.UUID, expiry_seconds: int
) -> datetime | None:
    """Record that the upload is whole and became ``import_id`` (its later HEADs name it until it
    expires). The new expiry, or None if the offset was not ``was``."""
    expires: datetime | None = await conn.fetchval(
        """
        UPDATE tus_uploads
        SET received = length, import_id = $3, expires_at = now() + make_interval(secs => $4)
        WHERE id = $1 AND received = $2 AND import_id IS NULL
        RETURNING expires_at
        """,
        upload_id,
        was,
        import_id,
        float(expiry_seconds),
    )
    return expires


async def delete_upload(conn: Executor, upload_id: uuid.UUID) -> UploadRow | None:
    """Delete the upload's row; what it was, or None if there was none."""
    record = await conn.fetchrow(
        f"DELETE FROM tus_uploads WHERE id = $1 RETURNING {_COLUMNS}, expires_at <= now() AS expired", upload_id
    )
    return None if record is None else _row(record)


async def expired_uploads(conn: Executor, now: datetime, *, limit: int = 1000) -> list[ExpiredUpload]:
    rows = await conn.fetch(
        """
        SELECT id, spool_path, import_id FROM tus_uploads
        WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2
        """,
        now,
        limit,
    )
    return [ExpiredUpload(r["id"], r["spool_path"], r["import_id"]) for r in rows]


async def delete_expired(conn: Executor, upload_id: uuid.UUID, now: datetime) -> bool:
    """Delete the upload if it is still expired at ``now`` (a request may have moved it on)."""
    deleted = await conn.fetchval(
        "DELETE FROM tus_uploads WHERE id = $1 AND expires_at <= $2 RETURNING true", upload_id, now
    )
    return bool(deleted)


async def receiving_paths(conn: Executor, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` that are the files of uploads still arriving (not yet an import's)."""
    rows = await conn.fetch(
        "SELECT spool_path FROM tus_uploads WHERE import_id IS NULL AND spool_path = ANY($1::text[])", list(paths)
    )
    return {r["spool_path"] for r in rows}


def _lock_key(upload_id: uuid.UUID) -> int:
    # 32 bits of the id: two uploads that share them only take turns.
    return int.from_bytes(upload_id.bytes[:4], "big", signed=True)


async def lock_upload(conn: Conn, upload_id: uuid.UUID, *, wait_seconds: float) -> bool:
    """Take the upload's lock for the session, waiting at most ``wait_seconds``; False if another
    request still holds it then."""
    try:
        async with conn.transaction():
            # SET LOCAL: the bound on the wait ends with this transaction; the lock, taken for
            # the session, outlives it.
            await conn.execute(f"SET LOCAL lock_timeout = {max(1, int(wait_seconds * 1000))}")
            await conn.execute("SELECT pg_advisory_lock($1, $2)", _LOCK_CLASS, _lock_key(upload_id))
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def try_lock_upload(conn: Conn, upload_id: uuid.UUID) -> bool:
    locked: Any = await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, _lock_key(upload_id))
    return bool(locked)


async def unlock_upload(conn: Conn, upload_id: uuid.UUID) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1, $2)", _LOCK_CLASS, _lock_key(upload_id))
