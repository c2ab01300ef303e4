"""`ledger submit` as a process against the real app on 127.0.0.1 (a worker in it): a
`kill -9` mid-upload, then a re-run that resumes from the server's offset, re-sending at most
the chunk that was in flight, and ends with the import done, its receipt saved and verified
offline with the server's key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import connect
from ledger.jobs.worker import running_worker
from ledger.testing import create_tokens, manifest
from ledger.testing.checkout import POLICIES_DIR, ROOT
from ledger.testing.server import serving

ROW = "SB-{:05d},NIH-R01GM123456,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
CHUNK = 16_384


class SlowPatches:
    """ASGI middleware around the app: each PATCH waits a little before the app reads it (so a
    test can kill the client mid-upload), and the PATCH bytes the server received are counted."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.patches = 0
        self.bytes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "PATCH":
            await self.app(scope, receive, send)
            return
        self.patches += 1
        await asyncio.sleep(0.1)

        async def counting() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                self.bytes += len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@dataclass
class Live:
    base_url: str
    tokens: dict[str, str]
    slow: SlowPatches


@contextlib.asynccontextmanager
async def live(database_url: str, home: Path) -> AsyncIterator[Live]:
    conn = await connect(database_url)
    try:
        tokens = await create_tokens(conn)
    finally:
        await conn.close()
    settings = Settings(database_url=database_url, home=home, policies_dir=POLICIES_DIR)
    policies = PolicyRegistry.load_dir(POLICIES_DIR)
    app = create_app(
        settings, database_url, policies=policies, background=[lambda: running_worker(settings, database_url, policies)]
    )
    slow = app.asgi_handler = SlowPatches(app.asgi_handler)
    with serving(app) as port:
        yield Live(f"http://127.0.0.1:{port}", tokens, slow)


def _env(server: Live, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEDGER_", "XDG_"))}
    env.update(
        {
            "LEDGER_URL": server.base_url,
            "LEDGER_TOKEN": server.tokens["manager"],
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }
    )
    return env


async def test_kill_9_mid_upload_then_a_rerun_resumes_resending_at_most_one_chunk(
    database_url: str, tmp_path: Path
) -> None:
    data = manifest(*(ROW.format(i) for i in range(2_000)))
    path = tmp_path / "inventory.csv"
    path.write_bytes(data)
    assert len(data) > 8 * CHUNK
    async with live(database_url, tmp_path / "home") as server:
        env = _env(server, tmp_path)
        command = [sys.executable, "-m", "ledger.cli.main", "submit", "--json", "--chunk-size", str(CHUNK)]
        first = subprocess.Popen(
            [*command, str(path)], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            for _ in range(3000):
                if server.slow.patches >= 4 or first.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            assert first.poll() is None, "the upload ended before it could be killed"
        finally:
            first.kill()  # SIGKILL: no handler, no clean-up
            await asyncio.to_thread(first.communicate)
        states = list((tmp_path / "state" / "ledger" / "uploads").glob("*.json"))
        assert len(states) == 1, "the upload URL was kept before the first byte was sent"
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            auditor = {"Authorization": f"Bearer {server.tokens['auditor']}"}
            keys = await client.get("/audit/public-key", headers=auditor)
            assert keys.status_code == 200, keys.text
        (tmp_path / "keys.json").write_text(keys.text)
        sent_before = server.slow.bytes
        assert sent_before < len(data)

        receipts = tmp_path / "receipts"
        second = await asyncio.to_thread(
            subprocess.run,
            [*command, "--receipt", str(receipts), "--public-key", str(tmp_path / "keys.json"), str(path)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        (line,) = second.stdout.splitlines()
        body = json.loads(line)
        assert (body["status"], body["rows_total"], body["rows_committed"], body["error"]) == ("done", 2000, 2000, None)
        # Resumed: the bytes received over both runs are the file and at most one chunk more.
        assert len(data) <= server.slow.bytes <= len(data) + CHUNK, (sent_before, server.slow.bytes)
        assert not states[0].exists()
        saved = receipts / f"{body['task_id']}.receipt.json"
        assert body["receipt"] == str(saved) and saved.is_file()

        # Once more: the same file is the same import (its sha256 is the Idempotency-Key).
        third = await asyncio.to_thread(
            subprocess.run, [*command, str(path)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert third.returncode == 0, third.stderr
        assert json.loads(third.stdout)["task_id"] == body["task_id"]


async def test_ctrl_c_mid_upload_exits_130_and_a_rerun_resumes(database_url: str, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) mid-upload: exit 130 with a word on stderr, the upload's state kept, and
    the next run finishes the same import."""
    import signal

    data = manifest(*(ROW.format(i) for i in range(1_000)))
    path = tmp_path / "inventory.csv"
    path.write_bytes(data)
    async with live(database_url, tmp_path / "home") as server:
        env = _env(server, tmp_path)
        command = [sys.executable, "-m", "ledger.cli.main", "submit", "--json", "--chunk-size", str(CHUNK), str(path)]
        first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for _ in range(3000):
                if server.slow.patches >= 2 or first.poll() is not None:
                    break
                await asyncio.sleep(0.01)
            assert first.poll() is None, "the upload ended before it could be interrupted"
            first.send_signal(signal.SIGINT)
            _, err = await asyncio.to_thread(first.communicate, timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 130, err
        assert b"interrupted" in err
        assert list((tmp_path / "state" / "ledger" / "uploads").glob("*.json"))
        second = await asyncio.to_thread(
            subprocess.run, command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 0, second.stderr
        assert json.loads(second.stdout)["rows_committed"] == 1_000
