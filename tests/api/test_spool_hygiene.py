"""Spool hygiene (issue 15): uploads are owner-only, and leave the spool when their import
ends (done, failed, cancelled), or after LEDGER_SPOOL_RETENTION_SECONDS through the janitor;
a file still needed by an import that may resume is never touched, and neither is one
outside the spool."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import create_pool
from ledger.jobs import spool_janitor
from ledger.jobs.worker import running_worker
from ledger.testing import Api, manifest

ROOT = Path(__file__).resolve().parents[2]
ROW = "EQ-0001,NIH-R01GM123456,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"


def spooled(tmp_path: Path) -> list[Path]:
    spool = tmp_path / "spool"
    return sorted(p for p in spool.iterdir() if p.is_file()) if spool.is_dir() else []


def settings_for(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, home=tmp_path, policies_dir=ROOT / "policies", **overrides)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool[Any]]:
    p = await create_pool(database_url, min_size=1, max_size=2)
    yield p
    await p.close()


@pytest.mark.parametrize("inline_worker", [False])
async def test_uploads_are_owner_only(api: Api, tmp_path: Path, inline_worker: bool) -> None:
    (tmp_path / "spool").mkdir(mode=0o755)  # an existing, too open spool is narrowed
    old = os.umask(0o002)
    try:
        response = await api.submit(manifest(ROW))
    finally:
        os.umask(old)
    assert response.status_code == 202, response.text
    assert stat.S_IMODE((tmp_path / "spool").stat().st_mode) == 0o700
    [path] = spooled(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_the_upload_goes_when_the_import_is_done_or_failed(api: Api, tmp_path: Path) -> None:
    done = await api.run(manifest(ROW))
    assert done["status"] == "done"
    failed = await api.run(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    assert failed["status"] == "failed", failed
    dry = await api.run(manifest(ROW.replace("EQ-0001", "EQ-0002")), dry_run="true")
    assert dry["status"] == "done"
    assert spooled(tmp_path) == []
    # A receipt is verified against the submitter's copy, so it needs nothing from the spool.
    assert (await api.get(f"/imports/{done['task_id']}/receipt", role="auditor")).status_code == 200


async def test_refused_uploads_leave_nothing(api: Api, tmp_path: Path) -> None:
    assert (await api.submit(manifest(ROW), policy="no-such-policy")).status_code == 422
    assert (await api.submit(manifest(ROW), dry_run="maybe")).status_code == 422
    assert (await api.submit(manifest(ROW), lab="bio-lab")).status_code in (403, 404, 422)
    assert spooled(tmp_path) == []


@pytest.mark.parametrize("inline_worker", [False])
async def test_a_cancelled_import_loses_its_upload_when_its_job_comes_round(
    api: Api, tmp_path: Path, database_url: str, inline_worker: bool
) -> None:
    task = (await api.submit(manifest(ROW))).json()["task_id"]
    assert len(spooled(tmp_path)) == 1
    assert (await api.client.delete(f"/imports/{task}", headers=api.auth("manager"))).status_code == 200
    settings = settings_for(database_url, tmp_path)
    async with running_worker(settings, database_url, PolicyRegistry.load_dir(settings.policies_dir)):
        for _ in range(200):
            if not spooled(tmp_path):
                break
            await asyncio.sleep(0.05)
    assert spooled(tmp_path) == []
    assert (await api.get(f"/imports/{task}")).json()["status"] == "cancelled"


@pytest.mark.parametrize("inline_worker", [False])
async def test_an_import_not_ended_keeps_its_upload(
    api: Api, tmp_path: Path, database_url: str, pool: asyncpg.Pool[Any], inline_worker: bool
) -> None:
    task = uuid.UUID((await api.submit(manifest(ROW))).json()["task_id"])
    [path] = spooled(tmp_path)
    os.utime(path, (0, 0))  # old, but queued (or retrying, or resuming): it will be read again
    settings = settings_for(database_url, tmp_path)
    assert not await spool_janitor.release(pool, settings, task)
    far = datetime.now(UTC) + timedelta(days=365)
    assert await spool_janitor.sweep(pool, settings, now=far) == []
    assert spooled(tmp_path) == [path]
    await pool.execute("UPDATE imports SET status = 'retrying' WHERE id = $1", task)
    assert not await spool_janitor.release(pool, settings, task)
    assert await spool_janitor.sweep(pool, settings, now=far) == []
    assert path.exists()


@pytest.mark.parametrize("settings_overrides", [{"spool_retention_seconds": 3600}])
async def test_with_retention_the_janitor_removes_ended_uploads_later(
    api: Api, tmp_path: Path, database_url: str, pool: asyncpg.Pool[Any], settings_overrides: dict[str, Any]
) -> None:
    done = await api.run(manifest(ROW))
    assert done["status"] == "done"
    [kept] = spooled(tmp_path)
    settings = settings_for(database_url, tmp_path, **settings_overrides)
    assert not await spool_janitor.release(pool, settings, uuid.UUID(done["task_id"]))
    now = datetime.now(UTC)
    assert await spool_janitor.sweep(pool, settings, now=now) == []
    assert kept.exists()
    assert await spool_janitor.sweep(pool, settings, now=now + timedelta(seconds=3601)) == [kept.resolve()]
    assert spooled(tmp_path) == []


async def test_the_janitor_removes_abandoned_files_after_an_hour(
    tmp_path: Path, database_url: str, pool: asyncpg.Pool[Any]
) -> None:
    settings = settings_for(database_url, tmp_path)
    spool = settings.spool_dir
    spool.mkdir(parents=True)
    abandoned, arriving = spool / "upload-abandoned.part", spool / "upload-arriving.part"
    abandoned.write_bytes(b"half a manifest")
    arriving.write_bytes(b"still coming")
    hour_ago = datetime.now(UTC).timestamp() - spool_janitor.ORPHAN_SECONDS - 5
    os.utime(abandoned, (hour_ago, hour_ago))
    assert await spool_janitor.sweep(pool, settings) == [abandoned.resolve()]
    assert spooled(tmp_path) == [arriving]


async def test_a_file_outside_the_spool_is_never_removed(tmp_path: Path, database_url: str) -> None:
    settings = settings_for(database_url, tmp_path / "home")
    elsewhere = tmp_path / "manifest.csv"
    elsewhere.write_bytes(manifest(ROW))
    assert spool_janitor.in_spool(settings, str(elsewhere)) is None
    assert spool_janitor.in_spool(settings, str(settings.spool_dir / "upload-x.part")) is not None


def test_the_retention_setting() -> None:
    assert Settings.from_env({}).spool_retention_seconds == 0
    assert Settings.from_env({"LEDGER_SPOOL_RETENTION_SECONDS": "600"}).spool_retention_seconds == 600
    with pytest.raises(ValueError, match="LEDGER_SPOOL_RETENTION_SECONDS"):
        Settings.from_env({"LEDGER_SPOOL_RETENTION_SECONDS": "-1"})
