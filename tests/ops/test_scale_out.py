"""Two of everything on one database (docs/scaling.md): two API processes (`ledger serve
--workers 0`) and two `ledger worker` processes, real subprocesses on 127.0.0.1, against one
fresh database on the tests' PostgreSQL, sharing one LEDGER_HOME (the upload spool and the
signing key), as processes on one machine do.

Twenty small imports are submitted at once, alternating between the two APIs and between two
labs. Each has rows of its own, rows it shares with every other import of its lab (identical:
one import commits them, the others find them duplicates, whichever order they commit in) and
rows that break a rule. Then: the batches are 1..N without a gap and each links to the one
before (no fork), each import's batches are consecutive (one commit never interleaves with
another), every import accounts for its rows as expected and the sums say each shared row was
committed once, both workers took imports, and the chain verifies through both APIs and with
`ledger verify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.core import records
from ledger.db.batches import HEADER_COLUMNS, header_of
from ledger.testing import HEADER, create_tokens
from ledger.testing.checkout import POLICIES_DIR, ROOT

IMPORTS = 20
OWN_ROWS = 300  # valid, found in this import only
SHARED_ROWS = 20  # valid, identical in every import of the same lab
BAD_ROWS = 10  # each breaks a rule
LABS = ("chem-lab", "bio-lab")
START_SECONDS = 60
DONE_SECONDS = 60


def _manifest(n: int, lab: str) -> bytes:
    tag = "C" if lab == "chem-lab" else "B"
    own = [
        f"SO-{tag}{n:02d}-{i:04d},NIH-R01GM1,equipment,{i % 7},CHM-204,2024-01-15,,,10.00,own {i}"
        for i in range(OWN_ROWS)
    ]
    shared = [
        f"SO-{tag}-SHARED-{i:03d},NSF-ABC123,consumable,1,BIO-1120,2023-06-01,,,1.50,shared {i}"
        for i in range(SHARED_ROWS)
    ]
    bad = [
        f"SO-{tag}{n:02d}-BAD-{i:02d},NIH-R01GM1,equipment,-{i + 1},CHM-204,2024-01-15,,,10.00,bad"
        for i in range(BAD_ROWS)
    ]
    return ("\n".join([HEADER, *own, *shared, *bad]) + "\n").encode()


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Processes:
    """The four processes, each logging to a file of its own; all killed at the end."""

    def __init__(self, home: Path, database_url: str) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        self.env.update(
            {
                "LEDGER_DATABASE_URL": database_url,
                "LEDGER_HOME": str(home),
                "LEDGER_POLICIES_DIR": str(POLICIES_DIR),
                # Ten uploads at once per API and token, ten imports waiting per lab: past the
                # defaults (4 and 10), which are not what is under test.
                "LEDGER_UPLOADS_PER_TOKEN_MAX": str(IMPORTS),
                "LEDGER_IMPORTS_QUEUED_PER_LAB_MAX": str(IMPORTS),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.ports = [_port(), _port()]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        commands = {
            f"api{i}": ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "0"]
            for i, port in enumerate(self.ports)
        } | {f"worker{i}": ["worker"] for i in range(2)}
        for name, args in commands.items():
            with (self.home / f"{name}.log").open("wb") as log:
                self.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "ledger.cli.main", *args],
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.home.glob("*.log"))
        )

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in (self.home / f"{name}.log").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def processes(tmp_path: Path, database_url: str) -> Iterator[_Processes]:
    home = tmp_path / "home"
    home.mkdir()
    procs = _Processes(home, database_url)
    yield procs
    procs.stop()


async def _until_ready(procs: _Processes, apis: list[httpx.AsyncClient]) -> None:
    """Both APIs answer ready and list both workers alive."""
    deadline = time.monotonic() + START_SECONDS
    while True:
        for name, proc in procs.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{procs.logs()}"
        with contextlib.suppress(httpx.TransportError):
            ready = [(await api.get("/health/ready")).status_code for api in apis]
            if ready == [200, 200]:
                workers = (await apis[0].get("/health/workers")).json()["workers"]
                if sum(1 for w in workers if w["alive"]) == 2:
                    return
        assert time.monotonic() < deadline, f"not ready after {START_SECONDS} s:\n{procs.logs()}"
        await asyncio.sleep(0.1)


async def _submit(api: httpx.AsyncClient, token: str, content: bytes, n: int, lab: str) -> str:
    response = await api.post(
        "/imports",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"scale-out-{n}"},
        files={"file": (f"scale-{n}.csv", content, "text/csv")},
        data={"lab": lab},
    )
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


async def _done(api: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DONE_SECONDS
    while True:
        body: dict[str, Any] = (await api.get(f"/imports/{task_id}")).json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"import {task_id} still {body['status']} after {DONE_SECONDS} s"
        await asyncio.sleep(0.1)


async def test_two_apis_and_two_workers_on_one_database(processes: _Processes, db: Any, database_url: str) -> None:
    tokens = await create_tokens(db)
    started = time.monotonic()
    processes.start()
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    apis = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{p}", headers=admin, timeout=60) for p in processes.ports]
    try:
        await _until_ready(processes, apis)
        ready = time.monotonic()

        # Twenty at once: import n through API n % 2, for lab n // 2 % 2 (each API gets both labs).
        plan = [(n, apis[n % 2], LABS[n // 2 % 2]) for n in range(IMPORTS)]
        manager = {"chem-lab": tokens["manager"], "bio-lab": tokens["manager2"]}
        task_ids = await asyncio.gather(
            *(_submit(api, manager[lab], _manifest(n, lab), n, lab) for n, api, lab in plan)
        )
        # Each import is read back through the other API than the one it was submitted to.
        bodies = await asyncio.gather(
            *(_done(apis[(n + 1) % 2], t) for (n, _, _), t in zip(plan, task_ids, strict=True))
        )
        done = time.monotonic()

        # Every import right: all its rows accounted for, its own rows committed, its bad rows
        # quarantined, and its shared rows either committed or found duplicates.
        for body in bodies:
            assert body["status"] == "done", body
            assert body["rows_total"] == OWN_ROWS + SHARED_ROWS + BAD_ROWS
            assert body["rows_quarantined"] == BAD_ROWS
            assert body["rows_committed"] + body["rows_duplicate"] == OWN_ROWS + SHARED_ROWS
            assert OWN_ROWS <= body["rows_committed"] <= OWN_ROWS + SHARED_ROWS
        # Each lab's shared rows were committed by exactly one import, whatever the order.
        for lab in LABS:
            of_lab = [b for b in bodies if b["lab"] == lab]
            assert sum(b["rows_committed"] for b in of_lab) == len(of_lab) * OWN_ROWS + SHARED_ROWS
            assert sum(b["rows_duplicate"] for b in of_lab) == (len(of_lab) - 1) * SHARED_ROWS
        committed = sum(b["rows_committed"] for b in bodies)
        assert await db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'asset'") == committed

        # The chain: seq 1..N, no gap, each batch linked to the one before; the head at N.
        rows = await db.fetch(f"SELECT {HEADER_COLUMNS}, chain_hash, import_id FROM ledger_batches ORDER BY seq")
        assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
        prev = records.GENESIS_PREV
        for r in rows:
            prev = records.chain_hash(prev, records.encode_header(header_of(r)))
            assert bytes(r["chain_hash"]) == prev, f"batch {r['seq']} does not link to batch {r['seq'] - 1}"
        head = await db.fetchrow("SELECT seq, chain_hash FROM ledger_head WHERE id = 1")
        assert (head["seq"], bytes(head["chain_hash"])) == (len(rows), prev)
        # Every batch is one of these imports'; each import's batches are consecutive and end
        # with its receipt.
        by_import = {str(b["task_id"]): [x["seq"] for x in b["batches"]] for b in bodies}
        assert sorted(s for seqs in by_import.values() for s in seqs) == [r["seq"] for r in rows]
        for body in bodies:
            seqs = by_import[body["task_id"]]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (body["task_id"], seqs)
            assert body["batches"][-1]["kind"] == "receipt"

        # Both workers took imports, and between them ran each once.
        ran = [
            [e["task_id"] for e in processes.events(f"worker{i}") if e.get("event") == "import_done"] for i in range(2)
        ]
        assert ran[0] and ran[1], f"one worker ran every import: {[len(r) for r in ran]}"
        assert sorted(ran[0] + ran[1]) == sorted(task_ids)
        print(
            f"scale-out: 4 processes ready in {ready - started:.1f} s; {IMPORTS} imports done "
            f"{done - ready:.1f} s after submission; workers ran {len(ran[0])} + {len(ran[1])}; {len(rows)} batches"
        )

        # The chain verifies, through either API and from the command line.
        auditor = {"Authorization": f"Bearer {tokens['auditor']}"}
        for api in apis:
            report = (await api.get("/audit/verify", headers=auditor)).json()
            assert report["ok"] is True, report
            assert report["batches_checked"] == len(rows)
        verify = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ledger.cli.main",
            "verify",
            env=processes.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await verify.communicate()
        assert verify.returncode == 0, out.decode() + err.decode()
    finally:
        for api in apis:
            await api.aclose()
