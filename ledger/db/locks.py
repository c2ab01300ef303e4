"""Advisory locks that order work across worker processes (a killed worker's connection, and
with it its locks, goes away, so nothing here can outlive its holder)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import asyncpg

from ledger.db.pool import Conn

__all__ = ["ADMISSION_KEY", "STAGING_SLOT_KEY", "hold_admission", "import_key", "import_lock", "staging_slot"]

# One key, shared by every worker: the set of staging processes is the machine's CPUs.
STAGING_SLOT_KEY = int.from_bytes(b"ldgstage", "big", signed=True)
_POLL_SECONDS = 0.2
# Submissions count the imports waiting and insert theirs under this key, so that N at once
# cannot all see room for one more (8 simultaneous POSTs at a limit of 4 were all admitted).
ADMISSION_KEY = int.from_bytes(b"ldgadmit", "big", signed=True)


async def hold_admission(conn: Conn) -> None:
    """Take the admission lock until the caller's transaction ends (it is held for a count
    and an insert: milliseconds)."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", ADMISSION_KEY)


def import_key(import_id: uuid.UUID) -> int:
    """The advisory lock key of one import."""
    # An advisory lock takes a signed 64-bit key; 64 bits of the uuid are unique enough, and a
    # collision would only make two imports take turns.
    return int.from_bytes(import_id.bytes[:8], "big", signed=True)


@asynccontextmanager
async def import_lock(conn: Conn, import_id: uuid.UUID) -> AsyncIterator[None]:
    """Hold the import's own lock for the body, waiting for a run of it that holds it now."""
    key = import_key(import_id)
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        yield
    finally:
        await _unlock(conn, key)


@asynccontextmanager
async def staging_slot(conn: Conn, *, give_up: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Hold the staging slot for the body: one big import's staging processes at a time.

    Staging is CPU-bound and its processes already use every core; two imports staging at
    once each go at half speed, so both finish as late as the second would after the first,
    and the first's final transaction (one core) starts that much later. Taking turns gets
    the first to its commit in half the time while the next stages beside it. ``give_up`` is
    awaited between tries and may raise (the import was cancelled while it waited).
    """
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", STAGING_SLOT_KEY):
        await give_up()
        await asyncio.sleep(_POLL_SECONDS)
    try:
        yield
    finally:
        await _unlock(conn, STAGING_SLOT_KEY)


async def _unlock(conn: Conn, key: int) -> None:
    # A broken connection has released the lock already.
    with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await conn.execute("SELECT pg_advisory_unlock($1)", key)
