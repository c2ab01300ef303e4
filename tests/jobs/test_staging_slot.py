"""Big imports take turns at the staging processes; a small one never waits for them, and a
cancel reaches an import that waits."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from ledger.bench.manifest import write_manifest
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import locks
from ledger.db.pool import Conn, connect
from ledger.jobs.import_job import run_import
from ledger.testing.checkout import ROOT
from ledger.testing.imports import create_import, job_settings


async def _status(conn: Conn, task_id: uuid.UUID) -> tuple[str, Any]:
    row = await conn.fetchrow("SELECT status, checkpoint FROM imports WHERE id = $1", task_id)
    assert row is not None
    return row["status"], row["checkpoint"]


async def test_a_big_import_waits_for_the_staging_slot_and_a_small_one_does_not(
    database_url: str, tmp_path: Path
) -> None:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    path = write_manifest(tmp_path / "m.csv", 300)
    big = job_settings(database_url, tmp_path, import_processes=1, import_parallel_bytes_min=1)
    small = job_settings(database_url, tmp_path, import_processes=1, import_parallel_bytes_min=10**9)
    holder, conn, other = await connect(database_url), await connect(database_url), await connect(database_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", locks.STAGING_SLOT_KEY)
        waiting = await create_import(conn, path, policies, enqueue=False)
        task = asyncio.create_task(run_import(conn, waiting, policies, big))
        # It reaches the slot (the header is read and the status set just before) and waits.
        for _ in range(200):
            if (await _status(other, waiting))[0] == "validating":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        assert not task.done()
        assert await _status(other, waiting) == ("validating", None)  # nothing staged yet
        # A file below the size for processes stages inline, beside the waiting one.
        inline = await create_import(other, write_manifest(tmp_path / "s.csv", 20), policies, enqueue=False)
        await asyncio.wait_for(run_import(other, inline, policies, small), 30)
        assert (await _status(other, inline))[0] == "done"
        await holder.execute("SELECT pg_advisory_unlock($1)", locks.STAGING_SLOT_KEY)
        await asyncio.wait_for(task, 60)
        assert (await _status(other, waiting))[0] == "done"
        # Released: the next big import takes the slot at once.
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", locks.STAGING_SLOT_KEY)
    finally:
        for c in (holder, conn, other):
            await c.close()


async def test_an_import_waiting_for_the_staging_slot_can_be_cancelled(database_url: str, tmp_path: Path) -> None:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    settings = job_settings(database_url, tmp_path, import_processes=1, import_parallel_bytes_min=1)
    holder, conn = await connect(database_url), await connect(database_url)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", locks.STAGING_SLOT_KEY)
        task_id = await create_import(conn, write_manifest(tmp_path / "m.csv", 300), policies, enqueue=False)
        task = asyncio.create_task(run_import(conn, task_id, policies, settings))
        await asyncio.sleep(1.0)
        await holder.execute("UPDATE imports SET status = 'cancelled' WHERE id = $1", task_id)
        await asyncio.wait_for(task, 10)  # noticed while waiting, not after the slot frees
        assert await _status(holder, task_id) == ("cancelled", None)
        assert await holder.fetchval("SELECT count(*) FROM import_staging") == 0
    finally:
        await holder.close()
        await conn.close()
