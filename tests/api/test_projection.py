"""The current-state projection: applied after the commit, never behind for decisions, never backwards."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ledger.db import projection
from ledger.db.pool import Conn, connect
from ledger.testing import Api, manifest

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
REVISED = GOOD.replace(",1,CHM-204", ",3,CHM-204")
OTHER = GOOD.replace("EQ-0001", "EQ-0002")


@asynccontextmanager
async def connect_ctx(database_url: str) -> AsyncIterator[Conn]:
    conn = await connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _current(api: Api) -> dict[str, Any]:
    items = (await api.get("/assets", params={"limit": 100})).json()["items"]
    return {i["asset_id"]: i for i in items}


async def _lag(database_url: str) -> None:
    """Forget the projection: as if every commit so far had not been applied yet."""
    conn = await connect(database_url)
    try:
        await conn.execute("DELETE FROM assets")
        await conn.execute("UPDATE assets_projection SET applied_seq = 0")
    finally:
        await conn.close()


async def test_done_import_reaches_assets_and_the_watermark_reaches_the_head(api: Api, database_url: str) -> None:
    status = await api.run(manifest(GOOD, OTHER))
    assert status["status"] == "done" and status["assets_current"] is True
    current = await _current(api)
    assert set(current) == {"EQ-0001", "EQ-0002"}
    assert current["EQ-0001"]["data"]["quantity"] == 1 and current["EQ-0001"]["revision"] == 1
    conn = await connect(database_url)
    try:
        state = await projection.projection_state(conn)
        assert state.applied_seq == state.head_seq == status["batches"][-1]["seq"]
        # The updated_at of a projected row is its batch's commit time, not the time it was applied.
        committed_at = await conn.fetchval(
            "SELECT b.committed_at FROM ledger_batches b JOIN assets a ON a.batch_seq = b.seq"
            " WHERE a.asset_id = 'EQ-0001'"
        )
        assert current["EQ-0001"]["updated_at"].startswith(committed_at.isoformat()[:19])
    finally:
        await conn.close()


async def test_status_says_when_assets_are_not_current_yet(api: Api, database_url: str) -> None:
    status = await api.run(manifest(GOOD))
    await _lag(database_url)
    again = (await api.get(f"/imports/{status['task_id']}")).json()
    assert again["status"] == "done" and again["assets_current"] is False
    dry = await api.run(manifest(OTHER), dry_run="true")
    assert dry["assets_current"] is None


async def test_decisions_see_commits_the_projection_has_not_applied(api: Api, database_url: str) -> None:
    await api.run(manifest(GOOD))
    await _lag(database_url)
    # Revision 1 is only in the ledger now: the same row again is a duplicate, a change is revision 2.
    dup = await api.run(manifest(GOOD), headers={"Idempotency-Key": "again"})
    assert (dup["rows_committed"], dup["rows_duplicate"]) == (0, 1)
    await _lag(database_url)
    revised = await api.run(manifest(REVISED))
    assert revised["rows_committed"] == 1
    rows = await api.rows(revised["task_id"])
    assert rows[0]["revision"] == 2
    # The worker applied everything after that import: the latest revision, not the first.
    current = await _current(api)
    assert current["EQ-0001"]["revision"] == 2 and current["EQ-0001"]["data"]["quantity"] == 3


async def test_applying_again_or_out_of_order_never_moves_a_key_backwards(api: Api, database_url: str) -> None:
    await api.run(manifest(GOOD))
    await api.run(manifest(REVISED))
    before = await _current(api)
    conn = await connect(database_url)
    try:
        # Replay the whole chain over a current projection: revision 1 must not overwrite revision 2.
        await conn.execute("UPDATE assets_projection SET applied_seq = 0")
        applied = await projection.apply_pending(conn, rows_per_step=1)
        assert applied > 0
        assert await projection.apply_pending(conn) == 0  # nothing left
        state = await projection.projection_state(conn)
        assert state.applied_seq == state.head_seq
    finally:
        await conn.close()
    assert await _current(api) == before
    assert before["EQ-0001"]["revision"] == 2


async def test_the_projection_waits_for_a_final_transaction_in_progress(api: Api, database_url: str) -> None:
    status = await api.run(manifest(GOOD))
    await _lag(database_url)
    conn = await connect(database_url)
    try:
        # Another import in its final transaction (as far as the projection can tell).
        await conn.execute("UPDATE imports SET status = 'finalizing' WHERE id = $1", status["task_id"])
        task = asyncio.create_task(projection.apply_pending(conn))
        await asyncio.sleep(1.0)
        assert not task.done()
        async with connect_ctx(database_url) as other:
            assert await other.fetchval("SELECT applied_seq FROM assets_projection") == 0
            await other.execute("UPDATE imports SET status = 'done' WHERE id = $1", status["task_id"])
        assert await asyncio.wait_for(task, 10) > 0
        # Bounded: a stream of imports does not starve it.
        await _lag(database_url)
        await conn.execute("UPDATE imports SET status = 'finalizing' WHERE id = $1", status["task_id"])
        assert await asyncio.wait_for(projection.apply_pending(conn, yield_seconds_max=0.5), 10) > 0
        await conn.execute("UPDATE imports SET status = 'done' WHERE id = $1", status["task_id"])
    finally:
        await conn.close()
