"""A worker killed with SIGKILL: the import is re-picked, resumes from its checkpoint and ends
with exactly the ledger content of an uninterrupted run; nothing is doubled or half-written."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from ledger.bench.manifest import write_manifest
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import imports as imports_db
from ledger.db.ledger_store import ImportAlreadyFinished, ImportContext, finalize_import
from ledger.db.pool import Conn, connect
from ledger.jobs.import_job import run_import
from ledger.testing.checkout import ROOT
from ledger.testing.content import ledger_content
from ledger.testing.databases import run_admin, with_database
from ledger.testing.imports import CHUNK_ROWS, create_import, job_settings

ROWS = 10_000
_references: dict[Path, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("crash") / "manifest.csv", ROWS)


@asynccontextmanager
async def _fresh_database(pg_server: str, template_db: str) -> AsyncIterator[str]:
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    await run_admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    try:
        yield with_database(pg_server, name)
    finally:
        await run_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _reference(pg_server: str, template_db: str, manifest: Path, home: Path) -> dict[str, Any]:
    """The same manifest, uninterrupted, staged in-process in one thread: the expected content."""
    if manifest in _references:
        return _references[manifest]
    async with _fresh_database(pg_server, template_db) as url:
        settings = job_settings(url, home)
        policies = PolicyRegistry.load_dir(settings.policies_dir)
        conn = await connect(url)
        try:
            task_id = await create_import(conn, manifest, policies, enqueue=False)
            await run_import(conn, task_id, policies, settings)
            record = await imports_db.get_import(conn, task_id)
            assert record is not None and record.status == "done", record
            _references[manifest] = await ledger_content(conn)
            return _references[manifest]
        finally:
            await conn.close()


@contextmanager
def _worker(url: str, home: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_HOME": str(home),
        "LEDGER_POLICIES_DIR": str(ROOT / "policies"),
        "LEDGER_IMPORT_CHUNK_ROWS": str(CHUNK_ROWS),
        # Stage with processes even for this small file, so their fate is tested too.
        "LEDGER_IMPORT_PROCESSES": "2",
        "LEDGER_IMPORT_PARALLEL_BYTES_MIN": "1",
        "LEDGER_JOB_HEARTBEAT_TIMEOUT": "2",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli.main", "worker"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _poll(conn: Conn, task_id: uuid.UUID, until: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        row = await conn.fetchrow("SELECT status, checkpoint FROM imports WHERE id = $1", task_id)
        assert row is not None
        if until(row):
            return row
        assert row["status"] not in ("failed", "cancelled"), row
        if time.monotonic() > deadline:
            raise AssertionError(f"import still {row['status']} after {timeout}s: {row['checkpoint']}")
        await asyncio.sleep(0.005)


def _kill(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return children


async def _crash_and_resume(
    pg_server: str,
    template_db: str,
    database_url: str,
    manifest: Path,
    tmp_path: Path,
    kill_when: Any,
) -> tuple[dict[str, Any], imports_db.StagingCheckpoint, str]:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    log = tmp_path / "worker.log"
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, manifest, policies, enqueue=True)
        with _worker(database_url, tmp_path, log) as first:
            await _poll(conn, task_id, kill_when)
            orphans = _kill(first)
        # Killed mid-import: nothing of it reached the ledger.
        assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
        assert await conn.fetchval("SELECT count(*) FROM import_rows") == 0
        assert (await conn.fetchval("SELECT status FROM imports WHERE id = $1", task_id)) not in ("done", "failed")
        # The staging processes notice their parent is gone and exit instead of lingering.
        _, alive = psutil.wait_procs(orphans, timeout=10)
        assert not alive, alive
        with _worker(database_url, tmp_path, log):
            row = await _poll(conn, task_id, lambda r: r["status"] == "done", timeout=90)
        content = await ledger_content(conn)
        checkpoint = imports_db.StagingCheckpoint(**row["checkpoint"])
        verify = subprocess.run(
            [sys.executable, "-m", "ledger.cli.main", "verify"],
            env={**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        await conn.close()
    reference = await _reference(pg_server, template_db, manifest, tmp_path)
    assert content["entries"] and content == reference
    return content, checkpoint, log.read_text()


def _events(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


async def test_kill_9_while_staging_resumes_from_the_checkpoint(
    pg_server: str, template_db: str, database_url: str, manifest: Path, tmp_path: Path
) -> None:
    at_least = 4 * CHUNK_ROWS

    def mid_staging(row: Any) -> bool:
        cp = row["checkpoint"]
        return cp is not None and cp["rows"] >= at_least and not cp["complete"]

    _, checkpoint, log = await _crash_and_resume(pg_server, template_db, database_url, manifest, tmp_path, mid_staging)
    # The second run skipped what the first had staged, and only that.
    assert len(checkpoint.resumed_at) == 1, checkpoint
    skipped = checkpoint.resumed_at[0]
    assert at_least <= skipped < ROWS and skipped % CHUNK_ROWS == 0
    assert checkpoint.rows == ROWS and checkpoint.complete
    resumed = [e for e in _events(log) if e.get("event") == "import_resumed"]
    assert [e["rows_skipped"] for e in resumed] == [skipped]


async def test_kill_9_during_the_final_transaction_commits_nothing_then_completes(
    pg_server: str, template_db: str, database_url: str, manifest: Path, tmp_path: Path
) -> None:
    _, checkpoint, _ = await _crash_and_resume(
        pg_server, template_db, database_url, manifest, tmp_path, lambda r: r["status"] == "finalizing"
    )
    # Staging was complete: the re-pick went straight to the final transaction.
    assert checkpoint.resumed_at == [ROWS]


async def test_two_runs_of_one_import_at_once_change_nothing_twice(
    pg_server: str, template_db: str, database_url: str, manifest: Path, tmp_path: Path
) -> None:
    settings = job_settings(database_url, tmp_path)
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    conns = [await connect(database_url) for _ in range(3)]
    try:
        task_id = await create_import(conns[0], manifest, policies, enqueue=False)
        await asyncio.gather(*(run_import(c, task_id, policies, settings) for c in conns[:2]))
        content = await ledger_content(conns[2])
        record = await imports_db.get_import(conns[2], task_id)
        assert record is not None and record.status == "done"
        assert record.rows_total == ROWS
        # And a late finalize of a finished import is refused, writing nothing.
        ctx = ImportContext(
            import_id=task_id,
            lab=record.lab,
            policy_name=record.policy_name,
            policy_version=record.policy_version,
            policy_sha256=record.policy_sha256,
            manifest_sha256=record.manifest_sha256,
            dry_run=False,
        )
        with pytest.raises(ImportAlreadyFinished):
            await finalize_import(conns[2], ctx, batch_rows_max=settings.batch_rows_max)
        assert await ledger_content(conns[2]) == content
    finally:
        for c in conns:
            await c.close()
    assert content == await _reference(pg_server, template_db, manifest, tmp_path)


async def test_a_checkpoint_whose_staged_rows_were_lost_starts_over(
    pg_server: str, template_db: str, database_url: str, manifest: Path, tmp_path: Path
) -> None:
    """Staging is UNLOGGED: a database crash empties it while the checkpoint survives."""
    settings = job_settings(database_url, tmp_path)
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, manifest, policies, enqueue=False)
        lost = imports_db.StagingCheckpoint(rows=3 * CHUNK_ROWS, last_row=3 * CHUNK_ROWS, bytes_read=1)
        async with conn.transaction():
            await imports_db.save_checkpoint(conn, task_id, lost)
        await run_import(conn, task_id, policies, settings)
        record = await imports_db.get_import(conn, task_id)
        assert record is not None and record.status == "done" and record.rows_total == ROWS
        assert record.checkpoint is not None and record.checkpoint["resumed_at"] == []
        content = await ledger_content(conn)
    finally:
        await conn.close()
    assert content == await _reference(pg_server, template_db, manifest, tmp_path)


async def test_processes_and_chunk_sizes_do_not_change_a_byte(
    pg_server: str, template_db: str, database_url: str, manifest: Path, tmp_path: Path
) -> None:
    settings = job_settings(
        database_url, tmp_path, import_processes=2, import_parallel_bytes_min=0, import_chunk_rows=777
    )
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, manifest, policies, enqueue=False)
        await run_import(conn, task_id, policies, settings)
        content = await ledger_content(conn)
    finally:
        await conn.close()
    assert content == await _reference(pg_server, template_db, manifest, tmp_path)


async def test_a_job_re_picked_after_its_import_was_cancelled_clears_its_staging(
    database_url: str, manifest: Path, tmp_path: Path
) -> None:
    settings = job_settings(database_url, tmp_path)
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, manifest, policies, enqueue=False)
        # What a worker killed mid-staging left, then a cancel while no worker ran it.
        await conn.execute("INSERT INTO import_staging (import_id, row_no, cells) VALUES ($1, 1, '[]')", task_id)
        await conn.execute("UPDATE imports SET status = 'cancelled' WHERE id = $1", task_id)
        await run_import(conn, task_id, policies, settings)
        assert await conn.fetchval("SELECT count(*) FROM import_staging WHERE import_id = $1", task_id) == 0
        assert await conn.fetchval("SELECT status FROM imports WHERE id = $1", task_id) == "cancelled"
        assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0
    finally:
        await conn.close()


async def test_a_commit_whose_worker_died_before_projecting_is_projected_at_the_next_start(
    database_url: str, manifest: Path, tmp_path: Path
) -> None:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    conn = await connect(database_url)
    try:
        task_id = await create_import(conn, manifest, policies, enqueue=False)
        # The pipeline alone: committed, as by a worker that died right after its commit.
        await run_import(conn, task_id, policies, job_settings(database_url, tmp_path))
        head = await conn.fetchval("SELECT seq FROM ledger_head")
        assert head > 0 and await conn.fetchval("SELECT applied_seq FROM assets_projection") == 0
        assert await conn.fetchval("SELECT count(*) FROM assets") == 0
        with _worker(database_url, tmp_path, tmp_path / "worker.log"):
            deadline = time.monotonic() + 30
            while await conn.fetchval("SELECT applied_seq FROM assets_projection") != head:
                assert time.monotonic() < deadline, "the worker did not apply the projection at start"
                await asyncio.sleep(0.05)
        committed = await conn.fetchval("SELECT rows_committed FROM imports WHERE id = $1", task_id)
        assert await conn.fetchval("SELECT count(*) FROM assets") == committed
        # Each current row is its key's latest entry, byte for byte.
        assert not await conn.fetchval(
            """
            SELECT count(*) FROM assets a JOIN ledger_entries e ON e.id = a.entry_id
            WHERE e.leaf_hash <> a.leaf_hash OR e.revision <> a.revision
               OR (convert_from(e.record, 'UTF8')::jsonb -> 'data') <> a.data
            """
        )
    finally:
        await conn.close()
