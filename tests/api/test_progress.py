"""The ETA of a running import counts its final transaction, not only the bytes left to read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.db.imports import ImportRecord
from ledger.services.progress import FINAL_STEP_TO_STAGING, eta_seconds, progress_of

T0 = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)


def record(**fields: Any) -> ImportRecord:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "idempotency_key": "k",
        "lab": "chem-lab",
        "policy_name": "lab-inventory",
        "policy_version": "1",
        "policy_sha256": "0" * 64,
        "manifest_sha256": "0" * 64,
        "manifest_bytes": 1000,
        "filename": "m.csv",
        "spool_path": "/nonexistent",
        "dry_run": False,
        "status": "validating",
        "rows_total": 0,
        "rows_committed": 0,
        "rows_duplicate": 0,
        "rows_quarantined": 0,
        "bytes_read": 0,
        "error": None,
        "accepted_body": {},
        "created_at": T0,
        "started_at": T0,
        "finished_at": None,
    }
    return ImportRecord(**{**base, **fields})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_while_reading_the_eta_adds_the_final_step_learned_per_row() -> None:
    # A quarter of the file (250 of an expected 1,000 rows) in 10 s: 30 s of reading left, then
    # 1,000 rows at 0.05 s a row.
    running = record(bytes_read=250, rows_total=250, finalize_seconds_per_row=0.05)
    assert eta_seconds(running, at(10)) == pytest.approx(30 + 50)


def test_with_no_history_the_final_step_is_a_multiple_of_staging() -> None:
    running = record(bytes_read=500, rows_total=400)
    # 20 s for half the file: 20 s more to read, and the final step for a 40 s staging.
    assert eta_seconds(running, at(20)) == pytest.approx(20 + 40 * FINAL_STEP_TO_STAGING)


def test_once_the_whole_file_is_read_the_eta_is_the_final_step_not_zero() -> None:
    read = record(bytes_read=1000, rows_total=1000, finalize_seconds_per_row=0.02)
    assert eta_seconds(read, at(10)) == pytest.approx(20)
    # The same, reported as progress (rounded to a tenth of a second).
    assert progress_of(read, at(10)).eta_seconds == 20.0


def test_in_the_final_step_the_estimate_counts_down_then_turns_unknown() -> None:
    finalizing = record(
        status="finalizing", bytes_read=1000, rows_total=1000, finalizing_at=at(10), finalize_seconds_per_row=0.02
    )
    assert eta_seconds(finalizing, at(10)) == pytest.approx(20)
    assert eta_seconds(finalizing, at(25)) == pytest.approx(5)
    # Longer than estimated: no made-up figure.
    assert eta_seconds(finalizing, at(31)) is None
    # With no history: twice the 10 s the file took to stage.
    guessed = record(status="finalizing", bytes_read=1000, rows_total=1000, finalizing_at=at(10))
    assert eta_seconds(guessed, at(15)) == pytest.approx(10 * FINAL_STEP_TO_STAGING - 5)


def test_nothing_to_estimate_from_yet_is_unknown_and_an_ended_import_is_zero() -> None:
    assert eta_seconds(record(status="queued", started_at=None), at(5)) is None
    assert eta_seconds(record(status="parsing"), at(5)) is None  # nothing read yet
    for status in ("done", "failed", "cancelled"):
        assert eta_seconds(record(status=status, finished_at=at(9)), at(60)) == 0.0


def test_rows_per_second_runs_from_start_to_finish() -> None:
    done = record(status="done", rows_total=500, bytes_read=1000, finished_at=at(4))
    assert progress_of(done, at(100)).rows_per_second == 125.0
    assert progress_of(record(status="queued", started_at=None), at(1)).rows_per_second is None


async def _finished(
    db: Any, *, rows: int, final_seconds: float, ended: float, dry_run: bool = False, status: str = "done"
) -> uuid.UUID:
    """A past import whose final step took ``final_seconds`` and ended ``ended`` s after T0."""
    import_id = uuid.uuid4()
    await db.execute(
        """
        INSERT INTO imports (id, idempotency_key, lab, policy_name, policy_version, policy_sha256,
                             manifest_sha256, manifest_bytes, spool_path, accepted_body, dry_run, status,
                             rows_total, started_at, finalizing_at, finished_at)
        VALUES ($1, $2, 'chem-lab', 'lab-inventory', '1', '', '', 1, '/nonexistent', '{}'::jsonb, $3, $4,
                $5, $6, $7, $8)
        """,
        import_id,
        str(import_id),
        dry_run,
        status,
        rows,
        at(ended - final_seconds - 1),
        at(ended - final_seconds),
        at(ended),
    )
    return import_id


async def test_the_final_step_cost_is_learned_from_recent_finished_imports_of_the_same_kind(db: Any) -> None:
    from ledger.db.imports import FINALIZE_HISTORY_IMPORTS, learn_finalize_cost

    new = await _finished(db, rows=0, final_seconds=0, ended=0, status="queued")
    assert await learn_finalize_cost(db, new) is None  # no history yet

    # Weighted by rows: 10 s for 100,000 rows and 1 s for 20,000 make 11 s for 120,000.
    await _finished(db, rows=100_000, final_seconds=10, ended=100)
    await _finished(db, rows=20_000, final_seconds=1, ended=200)
    # Not learned from: too small for the per-row cost to show, a dry run, a failed import.
    await _finished(db, rows=500, final_seconds=5, ended=300)
    await _finished(db, rows=50_000, final_seconds=50, ended=400, dry_run=True)
    await _finished(db, rows=50_000, final_seconds=50, ended=500, status="failed")
    assert await learn_finalize_cost(db, new) == pytest.approx(11 / 120_000)
    stored = await db.fetchval("SELECT finalize_seconds_per_row FROM imports WHERE id = $1", new)
    assert stored == pytest.approx(11 / 120_000)

    # Only the latest ones count: enough newer imports push the two above out.
    for i in range(FINALIZE_HISTORY_IMPORTS):
        await _finished(db, rows=10_000, final_seconds=0.2, ended=1000 + i)
    assert await learn_finalize_cost(db, new) == pytest.approx(0.2 / 10_000)


async def test_the_history_index_covers_exactly_the_imports_learned_from(db: Any) -> None:
    from ledger.db.imports import FINALIZE_HISTORY_ROWS_MIN

    definition = await db.fetchval("SELECT pg_get_indexdef('imports_finalized_idx'::regclass)")
    assert f"rows_total >= {FINALIZE_HISTORY_ROWS_MIN}" in definition
