"""The chain as auditors check it on the server: its head, and every hash recomputed."""

from __future__ import annotations

import os
from typing import Any

import asyncpg

from ledger.core.verify import VerifyReport
from ledger.db.head import Head, get_head
from ledger.db.verification import verify_ledger

__all__ = ["VERIFY_WORKERS", "Head", "head", "verify"]

# Processes that verify a large ledger in parallel ranges.
VERIFY_WORKERS = min(4, os.cpu_count() or 1)


async def head(pool: asyncpg.Pool[Any]) -> Head:
    return await get_head(pool)


async def verify(pool: asyncpg.Pool[Any], database_url: str) -> VerifyReport:
    """Recompute every record hash, batch root and chain link (large ledgers in parallel ranges)."""
    async with pool.acquire() as conn:
        return await verify_ledger(conn, database_url=database_url, workers=VERIFY_WORKERS)
