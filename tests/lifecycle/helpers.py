"""Driving real `ledger serve` processes from tests: start, watch, signal, kill, clean up.

Everything here talks to the service the way an operator does: its command line, its HTTP API
on 127.0.0.1 and its embedded PostgreSQL (over the server's Unix socket, read from
`postmaster.pid`, without joining the wheel's list of processes that keep the server up).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_SECONDS = 3
TERMINAL = ("done", "failed", "cancelled")
STAGING = ("parsing", "validating")
# The database of the embedded server that holds the ledger schema.
EMBEDDED_DB = "ledger"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ledger_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of every `ledger` command of one test: its own home, the repository's
    policies, a short heartbeat, no external database unless asked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env.update(
        {
            "LEDGER_HOME": str(home),
            "LEDGER_POLICIES_DIR": str(ROOT / "policies"),
            "LEDGER_JOB_HEARTBEAT_TIMEOUT": str(HEARTBEAT_SECONDS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def create_token(env: dict[str, str], role: str, *labs: str) -> str:
    """A token made with the CLI, its labs registered first (as an admin would)."""
    args = ["token", "create", "--role", role]
    for lab in labs:
        run_cli(env, "lab", "add", lab)  # exit 1 when registered already: fine
        args += ["--lab", lab]
    done = run_cli(env, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()[-1].strip()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a private loop (never touching the thread's current loop, which
    pytest-asyncio owns)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie is dead for this purpose)."""
    out = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_dead(proc: psutil.Process, timeout: float) -> None:
    """Until ``proc`` has exited (a zombie its parent has not reaped yet counts as exited)."""
    deadline = time.monotonic() + timeout
    while alive([proc]):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {proc.pid} still running {timeout}s after it was killed")
        time.sleep(0.02)


def wait_all_dead(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait (bounded) for every process to have exited; those still running."""
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_all(procs: Iterable[psutil.Process]) -> None:
    procs = list(procs)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


class Server:
    """One `ledger serve` on a free port of 127.0.0.1 with its own LEDGER_HOME."""

    def __init__(self, home: Path, *, workers: int = 1, env: dict[str, str] | None = None, name: str = "serve") -> None:
        self.home = home
        self.workers = workers
        self.env = ledger_env(home, **(env or {}))
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_token: str | None = None
        self.stdout_path = home / f"{name}.stdout.log"
        self.stderr_path = home / f"{name}.stderr.log"
        # Every process seen in this server's tree, killed at clean-up if still alive.
        self._seen: dict[int, psutil.Process] = {}
        self._starts = 0

    # -- life cycle ------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> Server:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self._starts += 1
        suffix = "" if self._starts == 1 else f".{self._starts}"
        self.stdout_path = self.home / f"{self.name}{suffix}.stdout.log"
        self.stderr_path = self.home / f"{self.name}{suffix}.stderr.log"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ledger.cli.main",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self._seen[self.proc.pid] = psutil.Process(self.proc.pid)
        self._wait_listening(timeout)
        return self

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        marker = f"ledger listening on http://127.0.0.1:{self.port}"
        while marker not in self.stdout():
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode} before listening:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not listening after {timeout}s:\n{self.output()}")
            self.remember()
            time.sleep(0.1)
        lines = self.stdout().splitlines()
        for i, line in enumerate(lines):
            if "an admin token was created" in line and i + 1 < len(lines):
                self.admin_token = lines[i + 1].strip()
        while True:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/health/live not answering after {timeout}s:\n{self.output()}")
            time.sleep(0.1)
        self.remember()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def client(self, token: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def cleanup(self) -> None:
        """Kill whatever is left of every tree this server ever had, the embedded PostgreSQL
        included."""
        with contextlib.suppress(psutil.Error, OSError):
            self.remember()
        kill_all(alive(self._seen.values()))
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    # -- processes --------------------------------------------------------------------------

    def postmaster(self) -> psutil.Process | None:
        """The embedded postmaster (first line of postmaster.pid), if it runs on our data dir."""
        try:
            pid = int((self.home / "pgdata" / "postmaster.pid").read_text().splitlines()[0])
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or not any(str(self.home) in part for part in proc.cmdline()):
                return None
            return proc
        except (FileNotFoundError, IndexError, ValueError, psutil.Error):
            return None

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def tree(self) -> list[psutil.Process]:
        """serve, everything below it, and the embedded postmaster with its backends (pg_ctl
        daemonises the postmaster, so it is not below serve)."""
        procs = [psutil.Process(self.pid), *self.descendants()]
        if (pm := self.postmaster()) is not None:
            procs.append(pm)
            with contextlib.suppress(psutil.Error):
                procs += pm.children(recursive=True)
        return procs

    def remember(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in self.tree():
                self._seen.setdefault(proc.pid, proc)
        return list(self._seen.values())

    def worker_processes(self) -> list[psutil.Process]:
        """serve's direct children that run `ledger worker`."""
        assert self.proc is not None
        out = []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE and "worker" in child.cmdline():
                    out.append(child)
        return out

    def wait_workers(
        self, count: int = 1, timeout: float = 30, exclude: set[int] | None = None
    ) -> list[psutil.Process]:
        deadline = time.monotonic() + timeout
        while True:
            workers = [w for w in self.worker_processes() if w.pid not in (exclude or set())]
            if len(workers) >= count:
                self.remember()
                return workers
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(workers)} new worker(s) of serve after {timeout}s:\n{self.output()}")
            time.sleep(0.1)

    # -- logs -------------------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def output(self, tail: int = 60) -> str:
        text = ""
        for path in sorted(self.home.glob(f"{self.name}*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            text += f"--- {path.name}\n" + "\n".join(lines) + "\n"
        return text

    def events(self) -> list[dict[str, Any]]:
        """Every structlog JSON line of every start of this server (stdout and stderr)."""
        out: list[dict[str, Any]] = []
        for path in sorted(self.home.glob(f"{self.name}*.log")):
            for line in path.read_text(errors="replace").splitlines():
                line = line.strip()
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        out.append(event)
        return out

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events():
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no such log event after {timeout}s:\n{self.output()}")
            time.sleep(0.2)

    # -- the embedded database --------------------------------------------------------------

    def db(self) -> Database:
        return Database(self.home / "pgdata")


class Database:
    """Short-lived connections to the embedded server over its Unix socket: one per call, so
    that no test connection holds up a shutdown."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata

    def _address(self) -> tuple[str, int]:
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        port = int(lines[3]) if lines[3].strip() else 5432
        return lines[4].strip(), port

    def url(self) -> str:
        host, port = self._address()
        return f"postgresql://postgres@/{EMBEDDED_DB}?host={host}&port={port}"

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        host, port = self._address()
        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=EMBEDDED_DB, timeout=5)
        try:
            return list(await conn.fetch(sql, *args, timeout=10))
        finally:
            await conn.close(timeout=5)

    def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return run_async(self._fetch(sql, *args))

    def fetchval(self, sql: str, *args: Any) -> Any:
        rows = self.fetch(sql, *args)
        return rows[0][0] if rows else None

    def terminate_import(self, task_id: str) -> int:
        """pg_terminate_backend every connection an import names itself by; how many."""
        rows = self.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            f"ledger-import:{task_id}",
        )
        return sum(1 for r in rows if r[0])


class Terminator(threading.Thread):
    """Terminates an import's connection every time it shows up, until stopped."""

    def __init__(self, db: Database, task_id: str) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.task_id = task_id
        self.kills = 0
        self.errors: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.kills += self.db.terminate_import(self.task_id)
            except (OSError, IndexError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.errors.append(repr(exc))
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def describe(procs: Iterable[psutil.Process]) -> list[tuple[int, str]]:
    out = []
    for proc in procs:
        try:
            out.append((proc.pid, " ".join(proc.cmdline()[:4])))
        except psutil.Error:
            out.append((proc.pid, "?"))
    return out


class Worker:
    """A `ledger worker` of its own (beside a `serve --workers 0`), on the embedded server."""

    def __init__(self, server: Server, name: str) -> None:
        env = {**server.env, "LEDGER_DATABASE_URL": server.db().url()}
        with (server.home / f"{name}.log").open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ledger.cli.main", "worker"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._seen: dict[int, psutil.Process] = {self.proc.pid: psutil.Process(self.proc.pid)}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._seen.setdefault(child.pid, child)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer does; its children are left to fend for themselves."""
        self.remember()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        self.remember()
        kill_all(alive(self._seen.values()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


# -- the HTTP contract ----------------------------------------------------------------------


def submit(client: httpx.Client, path: Path, **fields: str) -> str:
    with path.open("rb") as fh:
        response = client.post("/imports", files={"file": (path.name, fh, "text/csv")}, data=fields)
    assert response.status_code == 202, response.text
    task_id: str = response.json()["task_id"]
    return task_id


def get_import(client: httpx.Client, task_id: str) -> httpx.Response:
    return client.get(f"/imports/{task_id}")


def wait_import(
    client: httpx.Client,
    task_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float,
    *,
    fail_on_terminal: bool = True,
    interval: float = 0.02,
) -> dict[str, Any]:
    """Poll GET /imports/{id} until ``until(body)``; answers other than 200 (a restarting
    database) and refused connections are waited through."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while True:
        with contextlib.suppress(httpx.TransportError):
            response = get_import(client, task_id)
            if response.status_code == 200:
                body = response.json()
                if until(body):
                    return body
                if fail_on_terminal and body["status"] in TERMINAL:
                    raise AssertionError(f"import ended {body['status']} before the awaited state: {body}")
        if time.monotonic() > deadline:
            raise AssertionError(f"import {task_id} not in the awaited state after {timeout}s; last: {body}")
        time.sleep(interval)


def wait_done(client: httpx.Client, task_id: str, timeout: float) -> dict[str, Any]:
    """Until the import has ended, however it ended."""
    return wait_import(
        client, task_id, lambda b: b["status"] in TERMINAL, timeout, fail_on_terminal=False, interval=0.05
    )


def content(client: httpx.Client, auditor: httpx.Client, task_id: str) -> dict[str, Any]:
    """What an import put on the ledger, without what differs between two runs of the same
    manifest (task ids, times, chain hashes): the row counts, the asset batches (their hashes
    cover only their records) and the receipt's figures and outcomes root (a Merkle root over
    every row outcome)."""
    body = get_import(client, task_id).json()
    receipt_doc = auditor.get(f"/imports/{task_id}/receipt")
    assert receipt_doc.status_code == 200, receipt_doc.text
    receipt = json.loads(receipt_doc.json()["receipt"])
    return {
        "status": body["status"],
        "rows": {k: body[k] for k in ("rows_total", "rows_committed", "rows_duplicate", "rows_quarantined")},
        "asset_batches": [(b["seq"], b["batch_hash"], b["records"]) for b in body["batches"] if b["kind"] == "assets"],
        "receipt_kinds": [b["kind"] for b in body["batches"]],
        "receipt": {
            "rows": receipt["rows"],
            "outcomes_root": receipt["outcomes_root"],
            "batches": [(b["seq"], b["batch_hash"]) for b in receipt["batches"]],
            "manifest_sha256": receipt["manifest_sha256"],
        },
    }


def assert_ledger_whole(server: Server, auditor: httpx.Client, task_id: str, expected: dict[str, Any]) -> None:
    """The import is on the ledger exactly once, as in the uninterrupted run, and the chain
    verifies."""
    manager_view = content(auditor, auditor, task_id)
    assert manager_view == expected
    verify = auditor.get("/audit/verify", timeout=120)
    assert verify.status_code == 200, verify.text
    assert verify.json()["ok"] is True, verify.json()
    db = server.db()
    assets = db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'asset'")
    assert assets == expected["rows"]["rows_committed"]
    receipts = db.fetchval("SELECT count(*) FROM ledger_entries WHERE kind = 'receipt'")
    assert receipts == 1
    outcomes = db.fetchval("SELECT count(*) FROM import_rows")
    assert outcomes == expected["rows"]["rows_total"]
