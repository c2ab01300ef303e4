"""Control over running imports: cancel, backpressure (429), upload limits (413), live progress."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import asyncpg
import pytest

from ledger.db.ledger_store import ImportCancelled, ImportContext, finalize_import
from ledger.testing import Api, manifest

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"


def rows(n: int, prefix: str = "AS") -> bytes:
    return manifest(*[f"{prefix}-{i:06d},NIH-R01GM1,equipment,{i},CHM-204,2024-01-15,,,1.00,item" for i in range(n)])


@pytest.mark.parametrize("settings_overrides", [{"upload_bytes_max": 2_000}])
async def test_upload_over_the_size_limit_is_413(api: Api, settings_overrides: dict[str, Any]) -> None:
    response = await api.submit(rows(100))
    assert response.status_code == 413
    assert response.json()["code"] == "upload_too_large"
    assert "2000 bytes" in response.json()["message"]
    assert (await api.submit(manifest(GOOD))).status_code == 202


@pytest.mark.parametrize("inline_worker", [False])
@pytest.mark.parametrize("settings_overrides", [{"imports_queued_max": 3, "imports_queued_per_lab_max": 2}])
async def test_too_many_waiting_imports_get_429_with_retry_after(
    api: Api, inline_worker: bool, settings_overrides: dict[str, Any]
) -> None:
    for i in range(2):
        assert (await api.submit(rows(3, f"A{i}"))).status_code == 202
    per_lab = await api.submit(rows(3, "A9"))
    assert per_lab.status_code == 429
    assert per_lab.json()["code"] == "too_many_imports" and "per lab" in per_lab.json()["message"]
    assert int(per_lab.headers["Retry-After"]) > 0
    # Another lab still has room until the overall limit.
    assert (await api.submit(rows(3, "B1"), role="manager2")).status_code == 202
    overall = await api.submit(rows(3, "B2"), role="manager2")
    assert overall.status_code == 429 and "already waiting" in overall.json()["message"]


@pytest.mark.parametrize("inline_worker", [False])
async def test_a_queued_import_can_be_cancelled_once(api: Api, inline_worker: bool) -> None:
    task_id = (await api.submit(rows(5))).json()["task_id"]
    cancelled = await api.client.delete(f"/imports/{task_id}", headers=api.auth("manager"))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await api.client.delete(f"/imports/{task_id}", headers=api.auth("manager"))
    assert again.status_code == 409 and again.json()["code"] == "already_finished"
    other_lab = await api.client.delete(f"/imports/{task_id}", headers=api.auth("manager2"))
    assert other_lab.status_code == 404 and other_lab.json()["code"] == "not_found"
    auditor = await api.client.delete(f"/imports/{task_id}", headers=api.auth("auditor"))
    assert auditor.status_code == 403


async def test_a_finished_import_cannot_be_cancelled(api: Api) -> None:
    status = await api.run(manifest(GOOD))
    response = await api.client.delete(f"/imports/{status['task_id']}", headers=api.auth("manager"))
    assert response.status_code == 409 and response.json()["status"] == "done"


async def test_cancel_before_the_final_transaction_commits_nothing(api: Api, db: Any) -> None:
    """A running import cancelled before finalisation: the final transaction sees it and rolls back."""
    status = await api.run(manifest(GOOD), dry_run="true")  # an import row to hang the test on
    import_id = uuid.UUID(status["task_id"])
    await db.execute("UPDATE imports SET status = 'cancelled' WHERE id = $1", import_id)
    ctx = ImportContext(
        import_id=import_id,
        lab="chem-lab",
        policy_name="lab-inventory",
        policy_version="1",
        policy_sha256="0" * 64,
        manifest_sha256="0" * 64,
        dry_run=False,
    )
    with pytest.raises(ImportCancelled):
        await finalize_import(db, ctx, batch_rows_max=10)
    assert await db.fetchval("SELECT count(*) FROM ledger_batches") == 0


@pytest.mark.parametrize("inline_worker", [False])
async def test_events_stream_progress_at_least_once_a_second_then_the_outcome(
    api: Api, inline_worker: bool, database_url: str
) -> None:
    task_id = (await api.submit(rows(5))).json()["task_id"]

    # The test client runs the app to completion on a blocked loop, so the cancel that ends the
    # stream comes from another thread, through its own connection.
    def cancel_later() -> None:
        async def cancel() -> None:
            conn = await asyncpg.connect(database_url)
            try:
                await conn.execute(
                    "UPDATE imports SET status = 'cancelled', finished_at = now() WHERE id = $1", uuid.UUID(task_id)
                )
            finally:
                await conn.close()

        asyncio.run(cancel())

    canceller = threading.Timer(2.6, cancel_later)
    canceller.start()
    response = await api.client.get(f"/imports/{task_id}/events", headers=api.auth("manager"))
    canceller.join()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [
        (block.split("event: ")[1].split("\n")[0], json.loads(block.split("data: ")[1].split("\n")[0]))
        for block in response.text.replace("\r\n", "\n").strip().split("\n\n")
        if "data: " in block
    ]
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "cancelled" and set(kinds[:-1]) == {"progress"}
    assert len(kinds) - 1 >= 3  # 2.6 s of a running stream: at least one event a second
    first = events[0][1]
    assert {
        "status",
        "bytes_read",
        "rows_processed",
        "rows_committed",
        "rows_duplicate",
        "rows_quarantined",
        "rows_per_second",
        "eta_seconds",
    } <= set(first)


async def test_events_of_a_finished_import_end_with_its_outcome(api: Api) -> None:
    status = await api.run(manifest(GOOD))
    response = await api.client.get(f"/imports/{status['task_id']}/events", headers=api.auth("manager"))
    assert "event: done" in response.text
    assert json.loads(response.text.split("data: ")[-1].split("\n")[0])["rows_committed"] == 1


async def test_a_finished_import_reports_its_rate_and_when_its_final_step_ran(api: Api, db: Any) -> None:
    status = await api.run(rows(50))
    assert status["status"] == "done" and status["eta_seconds"] == 0.0
    assert status["rows_per_second"] > 0
    import_id = uuid.UUID(status["task_id"])
    timing = await db.fetchrow("SELECT started_at, finalizing_at, finished_at FROM imports WHERE id = $1", import_id)
    assert timing["started_at"] <= timing["finalizing_at"] <= timing["finished_at"]
    # Finished when its transaction had written everything, not when that transaction began:
    # after the time its batches were linked at.
    linked = await db.fetchval("SELECT max(committed_at) FROM ledger_batches WHERE import_id = $1", import_id)
    assert linked <= timing["finished_at"]
