"""Decisions are taken before the head lock: a commit that lands in between must be noticed.

Between an import's decide step and its final transaction, another import (or a correction)
may commit revisions of the same keys. The final transaction must then decide again, or it
would commit a second "revision 1" of keys that already have one. A commit that touches other
keys must not cost a second decision.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.bench.manifest import write_manifest
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import import_decisions as decisions
from ledger.db import imports as imports_db
from ledger.db import verification
from ledger.db.ledger_store import SideConnection
from ledger.db.pool import Conn, connect
from ledger.jobs.import_job import run_import
from ledger.testing.checkout import ROOT
from ledger.testing.imports import create_import, job_settings

ROWS = 400


def _side(database_url: str) -> SideConnection:
    @asynccontextmanager
    async def side() -> AsyncIterator[Conn]:
        conn = await connect(database_url)
        try:
            yield conn
        finally:
            await conn.close()

    return side


async def _interleaved(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, same_keys: bool, side: bool
) -> tuple[imports_db.ImportRecord, imports_db.ImportRecord, int]:
    """Import ``second``, but let ``first`` commit between its decide step and its final transaction."""
    first_path = write_manifest(tmp_path / "first.csv", ROWS, seed=1)
    second_path = write_manifest(tmp_path / "second.csv", ROWS, seed=1 if same_keys else 2)
    settings = job_settings(database_url, tmp_path)
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    conn, other = await connect(database_url), await connect(database_url)
    try:
        first = await create_import(other, first_path, policies, enqueue=False)
        second = await create_import(conn, second_path, policies, enqueue=False)
        real_decide, real_redecide = decisions.decide, decisions.redecide
        redecided = 0

        async def decide(c: Conn, import_id: uuid.UUID, *, staged_rows: int) -> int:
            seq = await real_decide(c, import_id, staged_rows=staged_rows)
            if import_id == second:
                await run_import(other, first, policies, settings)  # commits in between
            return seq

        async def redecide(c: Conn, import_id: uuid.UUID, *, staged_rows: int) -> None:
            nonlocal redecided
            redecided += 1
            await real_redecide(c, import_id, staged_rows=staged_rows)

        monkeypatch.setattr(decisions, "decide", decide)
        monkeypatch.setattr(decisions, "redecide", redecide)
        await run_import(conn, second, policies, settings, side=_side(database_url) if side else None)
        a, b = await imports_db.get_import(conn, first), await imports_db.get_import(conn, second)
        assert a is not None and b is not None and a.status == b.status == "done", (a, b)
        # Nothing doubled: one entry per key and revision, and the chain verifies.
        assert not await conn.fetch(
            "SELECT asset_id, grant_code, revision FROM ledger_entries WHERE kind = 'asset' "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1"
        )
        report = await verification.verify_ledger(conn)
        assert report.ok, report
        for table in ("import_staging", "import_decisions"):
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        return a, b, redecided
    finally:
        await conn.close()
        await other.close()


@pytest.mark.parametrize("side", [True, False], ids=["side-connection", "one-connection"])
async def test_a_commit_of_the_same_keys_in_between_makes_the_import_decide_again(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, side: bool
) -> None:
    a, b, redecided = await _interleaved(database_url, tmp_path, monkeypatch, same_keys=True, side=side)
    assert redecided == 1
    # The same manifest twice: what the first committed, the second finds already recorded.
    assert a.rows_committed > 0
    assert b.rows_committed == 0
    assert b.rows_duplicate == a.rows_committed + a.rows_duplicate
    assert b.rows_quarantined == a.rows_quarantined


async def test_a_commit_of_other_keys_in_between_keeps_the_decisions(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, redecided = await _interleaved(database_url, tmp_path, monkeypatch, same_keys=False, side=True)
    assert redecided == 0
    assert a.rows_committed > 0 and b.rows_committed > 0


async def test_working_rows_of_finished_imports_are_swept(database_url: str, tmp_path: Path) -> None:
    """What a worker that died between its commit and its cleanup left behind goes at the next start."""
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    conn = await connect(database_url)
    try:
        done = await create_import(conn, write_manifest(tmp_path / "a.csv", 10), policies, enqueue=False)
        running = await create_import(conn, write_manifest(tmp_path / "b.csv", 10), policies, enqueue=False)
        await conn.execute("UPDATE imports SET status = 'done' WHERE id = $1", done)
        await conn.execute("UPDATE imports SET status = 'validating' WHERE id = $1", running)
        for import_id in (done, running):
            await conn.execute("INSERT INTO import_staging (import_id, row_no, cells) VALUES ($1, 1, '[]')", import_id)
            await conn.execute(
                "INSERT INTO import_decisions (import_id, row_no, decision) VALUES ($1, 1, 'commit')", import_id
            )
        await decisions.sweep_finished(conn)
        left: dict[str, Any] = {
            t: await conn.fetchval(f"SELECT array_agg(import_id) FROM {t}")
            for t in ("import_staging", "import_decisions")
        }
        assert left == {"import_staging": [running], "import_decisions": [running]}
    finally:
        await conn.close()


async def test_a_failure_after_the_commit_leaves_the_import_done(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cleanup runs after the commit: if it fails, the import stays done with its counts."""
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, write_manifest(tmp_path / "m.csv", 50), policies, enqueue=False)

        real = decisions.discard_working_rows

        async def broken(c: Conn, import_id: uuid.UUID) -> None:
            if await c.fetchval("SELECT status FROM imports WHERE id = $1", import_id) == "done":
                raise asyncpg.InterfaceError("connection lost after the commit")
            await real(c, import_id)

        monkeypatch.setattr(decisions, "discard_working_rows", broken)
        await run_import(conn, task_id, policies, job_settings(database_url, tmp_path))
        record = await imports_db.get_import(conn, task_id)
        assert record is not None and record.status == "done" and record.rows_committed > 0, record
        assert await conn.fetchval("SELECT count(*) FROM import_staging") > 0
        await decisions.sweep_finished(conn)
        assert await conn.fetchval("SELECT count(*) FROM import_staging") == 0
        assert await conn.fetchval("SELECT count(*) FROM import_decisions") == 0
    finally:
        await conn.close()
