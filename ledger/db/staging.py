"""The staging table: an import's validated rows, COPYed in chunk by chunk before its final
transaction decides them (ledger.db.import_decisions, ledger.db.ledger_store)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

from ledger.db.pool import Conn

__all__ = ["analyze", "copy_chunk", "trim_to_checkpoint"]


async def trim_to_checkpoint(conn: Conn, import_id: uuid.UUID, last_row: int) -> int:
    """Drop staged rows past the checkpoint's last row; return how many rows stay staged."""
    await conn.execute("DELETE FROM import_staging WHERE import_id = $1 AND row_no > $2", import_id, last_row)
    staged = await conn.fetchval("SELECT count(*) FROM import_staging WHERE import_id = $1", import_id)
    return int(staged)


async def copy_chunk(conn: Conn, payload: bytes, columns: Sequence[str]) -> None:
    """COPY one chunk's binary rows, inside the caller's transaction (which also saves the
    checkpoint that describes them)."""
    # Staging is rebuilt from the file after a database crash (the checkpoint check notices),
    # so waiting for this commit's WAL flush buys nothing.
    await conn.execute("SET LOCAL synchronous_commit = off")
    await conn.copy_to_table("import_staging", source=_once(payload), columns=list(columns), format="binary")


async def analyze(conn: Conn) -> None:
    # Fresh statistics, or the planner takes a big import for a few rows and the final
    # transaction's joins go quadratic (autovacuum would analyse it only later).
    await conn.execute("ANALYZE import_staging")


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
