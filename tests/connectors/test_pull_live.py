"""`ledger pull` as a process against the real app and a real upstream, both on 127.0.0.1: one
sync becomes one import whose receipt names the pages, the --json line carries the sync, the
cursor moves on commit, a re-run of the same window changes nothing, a partial sync exits 5 and
the next run completes it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.config import Settings
from ledger.testing.checkout import POLICIES_DIR, ROOT
from ledger.testing.live import Served, serving_api
from ledger.testing.upstream import INVENTORY_MAP, Fault, Upstream, inventory_records, serving_upstream

SOURCE = (
    """
name = "bio-lims"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "{url}"
resource = "/inventory"
auth_header = "Authorization"
auth_env = "BIO_LIMS_TOKEN"
records = "data.items"
key = "id"
max_in_flight = 4
attempts = 2
max_wait_seconds = 2

[pagination]
type = "page"
page_param = "page"
page_size_param = "limit"
page_size = 20

[incremental]
field = "updated_at"
param = "updated_since"

"""
    + INVENTORY_MAP
    + "{extra}\n"
)


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[Served]:
    settings = Settings(database_url=database_url, home=tmp_path / "home", policies_dir=POLICIES_DIR)
    with serving_api(settings, database_url) as served:
        yield served


def _cli(server: Served, tmp_path: Path, *args: str, role: str = "manager") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "XDG_"))}
    env.update(
        LEDGER_URL=server.base_url,
        LEDGER_TOKEN=server.tokens[role],
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        BIO_LIMS_TOKEN="Bearer upstream-secret",
    )
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _pull(server: Served, tmp_path: Path, source: Path) -> tuple[int, dict[str, Any], str]:
    done = _cli(server, tmp_path, "pull", "--json", "--max-wait", "2", str(source))
    lines = done.stdout.splitlines()
    return done.returncode, (json.loads(lines[-1]) if lines else {}), done.stderr


async def test_pull_end_to_end(server: Served, tmp_path: Path) -> None:
    records = inventory_records(50)
    with serving_upstream(Upstream(records)) as upstream:
        source = tmp_path / "bio-lims.toml"
        source.write_text(SOURCE.format(url=upstream.url, extra=""))
        code, line, err = await asyncio.to_thread(_pull, server, tmp_path, source)
        assert code == 0, (line, err)
        assert (line["status"], line["sync_status"], line["records"], line["pages"]) == ("done", "ok", 50, 3)
        assert (line["rows_total"], line["rows_committed"]) == (50, 50) and line["sync_id"]
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            auth = {"Authorization": f"Bearer {server.tokens['auditor']}"}
            receipt = (await client.get(f"/imports/{line['task_id']}/receipt", headers=auth)).json()["receipt"]
            assert json.loads(receipt)["source"]["sync_id"] == line["sync_id"]
            connector = (await client.get("/connectors/bio-lims", headers=auth)).json()
            assert connector["cursor"] == records[-1]["updated_at"] and not connector["scheduled"]

        # The same window: nothing new upstream, nothing new on the ledger.
        code, again, err = await asyncio.to_thread(_pull, server, tmp_path, source)
        assert code == 0 and again["records"] == 0 and again["task_id"] is None, (again, err)

        # New records, and the third page fails until the retries run out: partial, exit 5.
        july = inventory_records(50, start=50, stamp=lambda i: f"2024-07-01T00:{i // 60:02d}:{i % 60:02d}Z")
        upstream.records += july
        upstream.fault = lambda n, path, query: Fault(status=503) if query.get("page") == "3" else None
        code, partial, err = await asyncio.to_thread(_pull, server, tmp_path, source)
        assert code == 5, (partial, err)
        # Two pages of 20 read: the first starts with the boundary's record (the saved cursor is
        # inclusive), which the last sync committed and this one skips.
        assert partial["sync_status"] == "partial" and (partial["skipped"], partial["rows_committed"]) == (1, 39)
        assert "retries_exhausted" in partial["error"]
        upstream.fault = None
        code, rest, err = await asyncio.to_thread(_pull, server, tmp_path, source)
        assert code == 0, (rest, err)
        # The cursor stayed where the data was complete: the rest came, nothing was doubled.
        assert rest["rows_committed"] == 11 and rest["skipped"] == 1, rest
        # Registered for the worker, the source keeps its cursor and its syncs.
        added = await asyncio.to_thread(_cli, server, tmp_path, "connector", "add", "--json", str(source))
        assert added.returncode == 0 and json.loads(added.stdout)["scheduled"], added.stderr
        listed = await asyncio.to_thread(_cli, server, tmp_path, "connector", "syncs", "--json", "bio-lims")
        syncs = json.loads(listed.stdout)
        assert [s["status"] for s in syncs] == ["ok", "partial", "ok", "ok"], listed.stderr
        assert syncs[1]["errors"][0]["code"] == "retries_exhausted" and syncs[1]["pages"][-1]["error"]
        # The upstream saw the secret from the variable, never anything else.
        assert all("upstream-secret" not in path for _, path in upstream.log)
