"""The chain as auditors check it on the server: its head, and every hash recomputed."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg

from ledger.core.verify import VerifyReport
from ledger.db.head import Head, get_head
from ledger.db.verification import verify_ledger

__all__ = ["VERIFY_WORKERS", "Head", "head", "verify"]

# Processes that verify a large ledger in parallel ranges.
VERIFY_WORKERS = min(4, os.cpu_count() or 1)

# One verification at a time per server (per pool): a caller that comes while one runs waits
# for it and gets its report, rather than starting VERIFY_WORKERS more processes.
_running: dict[asyncpg.Pool[Any], asyncio.Task[VerifyReport]] = {}


async def head(pool: asyncpg.Pool[Any]) -> Head:
    return await get_head(pool)


async def _verify(pool: asyncpg.Pool[Any], database_url: str) -> VerifyReport:
    async with pool.acquire() as conn:
        return await verify_ledger(conn, database_url=database_url, workers=VERIFY_WORKERS)


async def verify(pool: asyncpg.Pool[Any], database_url: str) -> VerifyReport:
    """Recompute every record hash, batch root and chain link (large ledgers in parallel ranges).
    Shared: while a verification runs, every caller gets that one's report."""
    task = _running.get(pool)
    if task is None:
        task = asyncio.ensure_future(_verify(pool, database_url))
        _running[pool] = task

        def forget(done: asyncio.Task[VerifyReport]) -> None:
            if _running.get(pool) is done:
                del _running[pool]
            if not done.cancelled():
                done.exception()  # retrieved: the callers that are still there re-raise it

        task.add_done_callback(forget)
    # A caller that goes away (a closed connection) does not cancel the others' verification.
    return await asyncio.shield(task)
