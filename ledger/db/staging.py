"""The staging table: an import's validated rows, COPYed in chunk by chunk before its final
transaction decides them (ledger.db.import_decisions, ledger.db.ledger_store)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg

from ledger.db.pool import Conn

__all__ = ["analyze", "copy_chunk", "trim_to_checkpoint"]


async def trim_to_checkpoint(conn: Conn, import_id: uuid.UUID, last_row: int) -> int:
    """Drop staged rows past the checkpoint's last row; return how many rows stay staged."""
    await conn.execute("DELETE FROM import_staging WHERE import_id = $1 AND row_no > $2", import_id, last_row)
    staged = await conn.fetchval("SELECT count(*) FROM import_staging WHERE import_id = $1", import_id)
    return int(staged)


# A chunk is a few MB that COPY takes well under a second for. When the server ends the
# connection mid-COPY (pg_terminate_backend, a restart), asyncpg can wait for good instead of
# raising (seen in about one run in four of the lifecycle tests): the COPY also ends when the
# connection reports its termination, or at the latest after this long plus 5 s a MB.
_COPY_SECONDS_MIN = 15.0


async def copy_chunk(conn: Conn, payload: bytes, columns: Sequence[str]) -> None:
    """COPY one chunk's binary rows, inside the caller's transaction (which also saves the
    checkpoint that describes them). A connection lost meanwhile raises
    ConnectionDoesNotExistError, which the job's retry policy treats as transient."""
    # Staging is rebuilt from the file after a database crash (the checkpoint check notices),
    # so waiting for this commit's WAL flush buys nothing.
    await conn.execute("SET LOCAL synchronous_commit = off")
    lost = asyncio.get_running_loop().create_future()

    def terminated(_: object) -> None:
        if not lost.done():
            lost.set_result(None)

    conn.add_termination_listener(terminated)
    copy = asyncio.ensure_future(
        conn.copy_to_table("import_staging", source=_once(payload), columns=list(columns), format="binary")
    )
    try:
        done, _ = await asyncio.wait(
            [copy, lost], timeout=_COPY_SECONDS_MIN + 5.0 * len(payload) / 2**20, return_when=asyncio.FIRST_COMPLETED
        )
        if copy in done:
            copy.result()
            return
    finally:
        conn.remove_termination_listener(terminated)
        if not copy.done():
            # Lost, timed out, or this task cancelled (a stopping worker): the COPY goes too.
            # Not awaited outright: a COPY stuck on a dead connection may not end on cancel.
            copy.cancel()
            await asyncio.wait([copy], timeout=2.0)
    raise asyncpg.ConnectionDoesNotExistError("the connection was lost during the staging COPY")


async def analyze(conn: Conn) -> None:
    # Fresh statistics, or the planner takes a big import for a few rows and the final
    # transaction's joins go quadratic (autovacuum would analyse it only later).
    await conn.execute("ANALYZE import_staging")


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
