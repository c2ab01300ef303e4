"""Staging fanned out over processes gives the same chunks, in order, as staging inline."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bench.manifest import write_manifest
from ledger.core.policy.registry import PolicyRegistry
from ledger.ingest.errors import ManifestError
from ledger.ingest.staging_processes import StagedChunk, StageJob, StagerCrashed, staged_chunks

ROOT = Path(__file__).resolve().parents[2]


def _job(path: Path, *, after_row: int = 0, chunk_rows: int = 300) -> StageJob:
    policy = PolicyRegistry.load_dir(ROOT / "policies").get("lab-inventory")
    return StageJob(
        import_id="00000000-0000-4000-8000-000000000001",
        lab="chem-lab",
        path=str(path),
        options={},
        policies_dir=str(ROOT / "policies"),
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        after_row=after_row,
        chunk_rows=chunk_rows,
    )


async def _all(job: StageJob, processes: int) -> list[StagedChunk]:
    return [chunk async for chunk in staged_chunks(job, processes)]


async def test_processes_return_the_inline_chunks_in_order(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.csv", 3_000)
    inline = await _all(_job(path), 0)
    fanned = await _all(_job(path), 3)
    assert [c.last_row for c in inline] == list(range(300, 3_001, 300))
    assert fanned == inline
    assert sum(c.rows for c in inline) == 3_000
    assert 0 < sum(c.quarantined for c in inline) < 100


async def test_a_resume_skips_the_rows_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "m.csv", 1_000)
    chunks = await _all(_job(path, after_row=600, chunk_rows=150), 2)
    assert [(c.rows, c.last_row) for c in chunks] == [(150, 750), (150, 900), (100, 1_000)]


@pytest.mark.parametrize("processes", [0, 2])
async def test_a_manifest_error_in_a_process_keeps_its_code(tmp_path: Path, processes: int) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(ManifestError) as caught:
        await _all(_job(path), processes)
    assert caught.value.code == "empty"


async def test_a_process_that_fails_for_another_reason_is_reported(tmp_path: Path) -> None:
    with pytest.raises(StagerCrashed, match="FileNotFoundError"):
        await _all(_job(tmp_path / "missing.csv"), 2)
