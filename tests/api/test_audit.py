"""Verification names the batch and entry a superuser tampered with; the chain survives concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.testing import Api, manifest

ROOT = Path(__file__).resolve().parents[2]
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()


def rows(prefix: str, n: int) -> bytes:
    return manifest(
        *[f"{prefix}-{i:04d},NIH-R01GM1,equipment,{i},CHM-204,2024-01-15,,,1.00,item {i}" for i in range(n)]
    )


@pytest.fixture
def batch_rows() -> int:
    return 3


async def _tamper(db: Any, *statements: str) -> None:
    # A superuser can switch the append-only triggers off for a session; verification must
    # not depend on them.
    await db.execute("SET session_replication_role = replica")
    for statement in statements:
        await db.execute(statement)
    await db.execute("SET session_replication_role = DEFAULT")


async def _failure(api: Api) -> dict[str, Any]:
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report["ok"] is False
    failure: dict[str, Any] = report["first_failure"]
    return failure


async def test_untouched_ledger_verifies(api: Api) -> None:
    await api.run(CLEAN)
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report == {"ok": True, "batches_checked": 4, "records_checked": 9, "first_failure": None}
    head = (await api.get("/audit/head", role="auditor")).json()
    assert head["seq"] == 4 and len(head["chain_hash"]) == 64 and head["committed_at"]


async def test_changed_quantity_is_reported_at_its_batch_and_entry(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    # CHEM-0043 is the 3rd clean row: batch 1, entry 2.
    await _tamper(
        db,
        """
        UPDATE ledger_entries
        SET record = convert_to(replace(convert_from(record, 'UTF8'), '"quantity":4', '"quantity":40'), 'UTF8')
        WHERE asset_id = 'CHEM-0043'
        """,
    )
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (1, 2, "leaf_hash_mismatch")


async def test_consistently_rewritten_entry_is_still_found(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    # Rewrite the bytes AND the stored leaf hash: the receipt's row outcomes still disagree.
    await _tamper(
        db,
        """
        UPDATE ledger_entries
        SET record = convert_to(replace(convert_from(record, 'UTF8'), '"quantity":500', '"quantity":5'), 'UTF8')
        WHERE asset_id = 'CONS-0500'
        """,
        """
        UPDATE ledger_entries SET leaf_hash = sha256('\\x00'::bytea || record) WHERE asset_id = 'CONS-0500'
        """,
    )
    failure = await _failure(api)
    # CONS-0500 is the 7th clean row: batch 3 (rows 7-8), entry 0.
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (3, 0, "entry_not_as_recorded")


async def test_entry_outside_the_chain_is_reported(api: Api, db: Any) -> None:
    """No foreign key stops an entry that names a batch the chain does not have; verification does."""
    await api.run(CLEAN)
    await db.execute(
        "INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash) "
        "VALUES (99, 0, 'asset', '\\x7b7d', '\\x00')"
    )
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (99, 0, "entry_outside_chain")


async def test_batches_committed_during_a_verification_are_not_stray(api: Api, db: Any) -> None:
    """The stray-entry check runs after the chain's snapshot: batches an import linked since then
    exist, and their entries are the next verification's, never a sign of tampering (a load
    test once saw `entry_outside_chain` for an import that committed while GET /audit/verify ran)."""
    from ledger.core.verify import VerifyReport
    from ledger.db.verification import _check_no_stray_entries

    await api.run(CLEAN)
    head = await db.fetchval("SELECT max(seq) FROM ledger_batches")
    assert head >= 2
    # As the chain looked before the last commit: every batch but the last one checked.
    before = VerifyReport(ok=True, batches_checked=head - 1, records_checked=0, first_failure=None)
    assert await _check_no_stray_entries(db, before) == before
    await db.execute(
        "INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash) "
        "VALUES ($1, 0, 'asset', '\\x7b7d', '\\x00')",
        head + 5,
    )
    stray = await _check_no_stray_entries(db, before)
    assert stray.first_failure is not None and stray.first_failure.reason == "entry_outside_chain"


async def test_deleted_entry_is_reported(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    await _tamper(db, "DELETE FROM ledger_entries WHERE batch_seq = 2 AND idx = 1")
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (2, 1, "entry_missing")


async def test_deleted_batch_is_reported(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    await _tamper(
        db,
        "DELETE FROM assets WHERE batch_seq = 2",
        "DELETE FROM ledger_entries WHERE batch_seq = 2",
        "DELETE FROM ledger_batches WHERE seq = 2",
    )
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (2, None, "batch_missing")


async def test_swapped_entries_are_reported(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    await _tamper(
        db,
        "UPDATE ledger_entries SET idx = -1 WHERE batch_seq = 1 AND idx = 0",
        "UPDATE ledger_entries SET idx = 0 WHERE batch_seq = 1 AND idx = 2",
        "UPDATE ledger_entries SET idx = 2 WHERE batch_seq = 1 AND idx = -1",
    )
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (1, 0, "entry_not_as_recorded")


async def test_rewritten_chain_link_is_reported(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    await _tamper(db, "UPDATE ledger_batches SET committed_at = committed_at + interval '1 second' WHERE seq = 2")
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (2, None, "chain_hash_mismatch")


async def test_batch_header_claiming_more_records_is_reported(api: Api, db: Any) -> None:
    await api.run(CLEAN)
    await _tamper(db, "UPDATE ledger_batches SET records = 4 WHERE seq = 2")
    failure = await _failure(api)
    assert (failure["batch_seq"], failure["entry"], failure["reason"]) == (2, 3, "entry_missing")


async def test_tampered_row_outcome_breaks_the_receipt(api: Api, db: Any) -> None:
    status = await api.run(
        manifest("EQ-1,NIH-R01GM1,equipment,1,CHM-204,2024-01-15", "EQ-2,bad,equipment,1,CHM-204,2024-01-15")
    )
    await _tamper(
        db,
        f"UPDATE import_rows SET errors = '[]'::jsonb WHERE import_id = '{status['task_id']}' AND row_no = 2",
    )
    failure = await _failure(api)
    assert failure["reason"] == "outcomes_root_mismatch"
    assert failure["batch_seq"] == status["batches"][-1]["seq"]


async def test_cli_verify_exits_1_when_tampered(api: Api, db: Any, database_url: str) -> None:
    await api.run(CLEAN)
    env = {"LEDGER_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}
    ok = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert ok.returncode == 0, ok.stderr
    assert '"ok":true' in ok.stdout
    await _tamper(db, "DELETE FROM ledger_entries WHERE batch_seq = 2 AND idx = 0")
    bad = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode == 1
    assert "batch 2, entry 0" in bad.stderr and "entry_missing" in bad.stderr


async def test_four_concurrent_imports_all_finish_on_one_unbroken_chain(api: Api) -> None:
    files = [rows(prefix, 7) for prefix in ("AA", "BB", "CC", "DD")]
    responses = await asyncio.gather(*(api.submit(f) for f in files))
    assert all(r.status_code == 202 for r in responses)
    statuses = await asyncio.gather(*(api.wait(r.json()["task_id"]) for r in responses))
    assert all(s["status"] == "done" and s["rows_committed"] == 7 for s in statuses)
    seqs = sorted(b["seq"] for s in statuses for b in s["batches"])
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps, no forks
    assert len(seqs) == 4 * (3 + 1)
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report["ok"] is True and report["records_checked"] == 4 * 8
