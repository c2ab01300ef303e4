"""A `ledger worker` killed with SIGKILL in the middle of a sync (issue #17): the sync it left
`running` is marked failed (`worker_lost`) by the next run under the source's lock, pgqueuer
re-picks the very job once its heartbeat is stale, and that run commits every upstream record
exactly once, moves the cursor to the last one, and the chain verifies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ledger.connectors.sync import remove_leftovers
from ledger.core import roles
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.import_statuses import ACTIVE
from ledger.db.pool import Conn, connect
from ledger.db.tokens import create_token
from ledger.db.verification import verify_ledger
from ledger.services import connectors
from ledger.services.access import Principal
from ledger.testing.checkout import ROOT
from ledger.testing.upstream import INVENTORY_MAP, Upstream, inventory_records, serving_upstream

T = TypeVar("T")

RECORDS = 200
PAGE_SIZE = 20  # ten pages, fetched one after the other (cursor pagination)
# Slow enough that the sync is still paging when the worker is killed, fast enough after.
SLOW_PAGE_SECONDS = 0.3
HEARTBEAT_TIMEOUT = 2

DEFINITION = (
    """
name = "chem-wms"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "{url}"
resource = "/inventory"
records = "data.items"
key = "id"
attempts = 2
max_wait_seconds = 1

[pagination]
type = "cursor"
cursor_path = "meta.next_cursor"
cursor_param = "cursor"
page_size_param = "limit"
page_size = {page_size}

[incremental]
field = "updated_at"
param = "updated_since"
start = "2024-01-01T00:00:00Z"

"""
    + INVENTORY_MAP
)


@contextmanager
def _worker(url: str, home: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": url,
        "LEDGER_HOME": str(home),
        "LEDGER_POLICIES_DIR": str(ROOT / "policies"),
        "LEDGER_IMPORT_PROCESSES": "0",
        "LEDGER_JOB_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
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


async def _until(what: str, probe: Callable[[], Awaitable[T | None]], timeout: float, log: Path) -> T:
    deadline = time.monotonic() + timeout
    while (found := await probe()) is None:
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
            raise AssertionError(f"{what}: not after {timeout}s\n{tail}")
        await asyncio.sleep(0.02)
    return found


async def _syncs(conn: Conn) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """
        SELECT s.id, s.status, s.errors, s.records, s.import_id, i.status AS import_status, i.rows_committed,
               i.rows_duplicate, i.rows_quarantined
          FROM connector_syncs s LEFT JOIN imports i ON i.id = s.import_id
         ORDER BY s.started_at, s.id
        """
    )
    return [dict(r) for r in rows]


async def test_kill_9_mid_sync_loses_nothing_doubles_nothing_and_the_chain_verifies(
    database_url: str, tmp_path: Path
) -> None:
    policies = PolicyRegistry.load_dir(ROOT / "policies")
    records = inventory_records(RECORDS)
    log = tmp_path / "worker.log"
    conn = await connect(database_url)
    try:
        _, manager = await create_token(conn, role=roles.LAB_MANAGER, labs=("chem-lab",))
        _, officer = await create_token(conn, role=roles.COMPLIANCE_OFFICER)
        with serving_upstream(Upstream(records, latency=SLOW_PAGE_SECONDS)) as upstream:
            text = DEFINITION.format(url=upstream.url, page_size=PAGE_SIZE)
            await connectors.register(conn, Principal(manager.id, manager.role, ("chem-lab",)), policies, text)
            assert await connectors.trigger(conn, Principal(officer.id, officer.role, ()), "chem-wms")
            job_id = await conn.fetchval("SELECT id FROM pgqueuer WHERE entrypoint = 'connector_sync'")

            async def mid_sync() -> bool | None:
                # Two pages served and the third asked for: the sync is paging, nothing is spooled
                # for an import yet.
                return True if upstream.requests >= 3 else None

            with _worker(database_url, tmp_path, log) as first:
                await _until("the first worker paging", mid_sync, 30, log)
                first.send_signal(signal.SIGKILL)
                first.wait()
            served_before_kill = upstream.requests
            assert served_before_kill < RECORDS // PAGE_SIZE

            # What the dead worker left: its sync `running`, its job `picked`, nothing committed.
            [lost] = await _syncs(conn)
            assert lost["status"] == "running" and lost["import_id"] is None, lost
            assert await conn.fetchval("SELECT status::text FROM pgqueuer WHERE id = $1", job_id) == "picked"
            assert await conn.fetchval("SELECT count(*) FROM imports") == 0
            assert await conn.fetchval("SELECT count(*) FROM ledger_entries") == 0

            upstream.latency = 0.0
            with _worker(database_url, tmp_path, log):

                async def ended_and_projected() -> list[dict[str, Any]] | None:
                    syncs = await _syncs(conn)
                    if len(syncs) < 2 or syncs[-1]["status"] == "running" or syncs[-1]["import_status"] in ACTIVE:
                        return None
                    head = await conn.fetchval("SELECT seq FROM ledger_head")
                    applied = await conn.fetchval("SELECT applied_seq FROM assets_projection")
                    return syncs if applied == head else None

                syncs = await _until("the re-picked sync ended", ended_and_projected, 30, log)

        # The interrupted sync is failed, marked by the next run (which held the source's lock).
        assert len(syncs) == 2, syncs
        lost, again = syncs
        assert lost["status"] == "failed", lost
        assert [e["code"] for e in lost["errors"]] == ["worker_lost"]
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        assert any(e.get("event") == "connector_sync_lost" and e.get("syncs") == 1 for e in events)

        # pgqueuer re-picked the same job (stale heartbeat): no second job was ever queued.
        assert await conn.fetchval("SELECT count(*) FROM pgqueuer WHERE entrypoint = 'connector_sync'") == 0
        log_rows = await conn.fetch(
            "SELECT job_id, status::text FROM pgqueuer_log WHERE entrypoint = 'connector_sync' ORDER BY id"
        )
        assert [tuple(r) for r in log_rows] == [
            (job_id, "queued"),
            (job_id, "picked"),  # by the worker that was killed
            (job_id, "picked"),  # re-picked by the second, its heartbeat stale
            (job_id, "successful"),
        ]

        # The second run started over from the first page (the cursor had not moved) and
        # committed every record once.
        assert upstream.log[served_before_kill][1].startswith("/inventory?updated_since=")
        assert "cursor=" not in upstream.log[served_before_kill][1]
        assert again["status"] == "ok" and again["records"] == RECORDS, again
        assert (again["rows_committed"], again["rows_duplicate"], again["rows_quarantined"]) == (RECORDS, 0, 0)
        assert await conn.fetchval("SELECT count(*) FROM imports") == 1
        assert await conn.fetchval("SELECT count(*) FROM import_rows") == RECORDS
        entries = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT asset_id) AS keys FROM ledger_entries WHERE kind = 'asset'"
        )
        assert entries is not None and (entries["n"], entries["keys"]) == (RECORDS, RECORDS)
        tags = {r["asset_id"] for r in await conn.fetch("SELECT asset_id FROM assets")}
        assert tags == {r["tag"] for r in records}

        cursor = await conn.fetchval("SELECT cursor FROM connectors WHERE name = 'chem-wms'")
        assert cursor["value"] == records[-1]["updated_at"]

        # The dead sync's working file (mapped rows: lab data) went with it, cleared by the next
        # sync of the source under its lock; the finished sync's files are gone too.
        assert sorted(p.name for p in (tmp_path / "spool" / "connectors").iterdir()) == []
        [removed] = [e["files"] for e in events if e.get("event") == "connector_leftovers_removed"]
        assert len(removed) == 1 and removed[0].startswith(".chem-wms-") and removed[0].endswith(".raw")

        report = await verify_ledger(conn)
        assert report.ok and report.records_checked >= RECORDS, report
    finally:
        await conn.close()


def test_a_sources_leftovers_are_its_own_files_only(tmp_path: Path) -> None:
    """What a worker holding one source's lock removes: that source's working files and
    manifests, never those of a source whose name starts the same, nor anything else."""
    unique = "0123456789abcdef0123456789abcdef"
    mine = [f".chem-{unique}.raw", f"chem-{unique}.jsonl"]
    others = [f".chem-wms-{unique}.raw", f"chem-wms-{unique}.jsonl", f"chem-{unique}.jsonl.part", "chem-notes.jsonl"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"{}\n")
    assert remove_leftovers(tmp_path, "chem") == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)
    assert remove_leftovers(tmp_path / "absent", "chem") == []
