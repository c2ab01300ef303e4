"""The scheduler's tick (``run_scheduled``): it queues a sync of each scheduled source whose cron
expression fell due, never of a source registered unscheduled (as `ledger pull` registers it),
and at most one job per source however often it ticks; and a source whose upstream is down
never stops another from syncing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.core import roles
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import create_pool
from ledger.db.tokens import create_token
from ledger.services import connectors
from ledger.services.access import Principal
from ledger.testing import Api
from ledger.testing.checkout import ROOT
from ledger.testing.upstream import INVENTORY_MAP, Upstream, inventory_records, serving_upstream

DEFINITION = (
    """
name = "{name}"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "{url}"
resource = "/inventory"
records = "data.items"
key = "id"
schedule = "{schedule}"
attempts = 2
max_wait_seconds = 1
timeout_seconds = 5

[pagination]
type = "page"
page_size_param = "limit"
page_size = 50

"""
    + INVENTORY_MAP
)

EVERY_FIVE_MINUTES = "*/5 * * * *"
NEW_YEAR = "0 0 1 1 *"
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused


async def test_the_tick_queues_due_scheduled_sources_once_each_and_never_unscheduled_ones(database_url: str) -> None:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    pool = await create_pool(database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            _, token = await create_token(conn, role=roles.LAB_MANAGER, labs=("chem-lab",))
            manager = Principal(token.id, token.role, ("chem-lab",))
            for name, schedule, scheduled in [
                ("due", EVERY_FIVE_MINUTES, True),
                ("pulled", EVERY_FIVE_MINUTES, False),  # registered by `ledger pull`: never scheduled
                ("yearly", NEW_YEAR, True),
            ]:
                text = DEFINITION.format(name=name, url=NOWHERE, schedule=schedule)
                await connectors.register(conn, manager, policies, text, scheduled=scheduled)
            now = datetime.now(UTC)
            hour_ago = now - timedelta(hours=1)
            # "due" and "pulled" last ran an hour ago (their cron fell due since); "yearly" now.
            await conn.execute("UPDATE connectors SET last_run_at = $1 WHERE name <> 'yearly'", hour_ago)
            await conn.execute("UPDATE connectors SET last_run_at = $1 WHERE name = 'yearly'", now)

        async def jobs() -> list[bytes]:
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT payload FROM pgqueuer WHERE entrypoint = 'connector_sync' AND status = 'queued' ORDER BY id"
                )
            return [bytes(r["payload"]) for r in rows]

        async def last_runs() -> dict[str, datetime | None]:
            async with pool.acquire() as conn:
                return {
                    r["name"]: r["last_run_at"] for r in await conn.fetch("SELECT name, last_run_at FROM connectors")
                }

        assert await connectors.run_scheduled(pool, now) == ["due"]
        assert await jobs() == [b"due"]
        runs = await last_runs()
        assert runs["due"] is not None and runs["due"] > hour_ago
        assert runs["pulled"] == hour_ago and runs["yearly"] == now

        # The next tick: "due" has just run, nothing fell due since.
        assert await connectors.run_scheduled(pool, now) == []
        # Due again (as if its job were still waiting when the cron came round again): still
        # one job for it, not a second.
        async with pool.acquire() as conn:
            await conn.execute("UPDATE connectors SET last_run_at = $1 WHERE name = 'due'", hour_ago)
        assert await connectors.run_scheduled(pool, now) == ["due"]
        assert await jobs() == [b"due"]
    finally:
        await pool.close()


async def _syncs_ended(api: Api, names: list[str], within: float = 20.0) -> dict[str, list[dict[str, Any]]]:
    """Each source's syncs, once each has one that ended and whose import (if any) ended."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        out = {name: (await api.get(f"/connectors/{name}/syncs")).json() for name in names}
        if all(
            syncs and syncs[0]["status"] != "running" and syncs[0]["import_status"] in (None, "done", "failed")
            for syncs in out.values()
        ):
            return out
        assert asyncio.get_running_loop().time() < deadline, out
        await asyncio.sleep(0.05)


# One sync at a time: the worker runs the down source's job to its end, then the good one's.
@pytest.mark.parametrize("settings_overrides", [{"imports_running_max": 1}])
async def test_a_source_whose_upstream_is_down_never_stops_another(api: Api, database_url: str) -> None:
    records = inventory_records(30)
    with serving_upstream(Upstream(records)) as upstream:
        # "down" sorts first: the tick queues it first, and the worker takes it first.
        for name, url in [("down", NOWHERE), ("good", upstream.url)]:
            text = DEFINITION.format(name=name, url=url, schedule=EVERY_FIVE_MINUTES)
            response = await api.client.post("/connectors", headers=api.auth("manager"), json={"definition": text})
            assert response.status_code == 201, response.text
        pool = await create_pool(database_url, max_size=2)
        try:
            async with pool.acquire() as conn:
                await conn.execute("UPDATE connectors SET last_run_at = now() - interval '1 hour'")
            # The app's worker may tick at a minute's turn as well: either tick queues each
            # source once, so what is checked is what came of it.
            await connectors.run_scheduled(pool, datetime.now(UTC))
        finally:
            await pool.close()
        syncs = await _syncs_ended(api, ["down", "good"])

    down, good = syncs["down"], syncs["good"]
    assert len(down) == 1 and len(good) == 1, syncs
    assert datetime.fromisoformat(down[0]["finished_at"]) <= datetime.fromisoformat(good[0]["started_at"]), syncs
    assert down[0]["status"] == "failed" and down[0]["task_id"] is None, down
    assert [e["code"] for e in down[0]["errors"]] == ["retries_exhausted"]
    assert good[0]["status"] == "ok" and good[0]["records"] == 30, good
    status = await api.wait(good[0]["task_id"])
    assert status["status"] == "done" and status["rows_committed"] == 30
    assets = (await api.get("/assets", params={"limit": 100})).json()["items"]
    assert sorted(a["asset_id"] for a in assets) == sorted(r["tag"] for r in records)
