"""What `ledger bench-pull` and `ledger bench-submit` share: a fresh `ledger serve` with a lab and a
lab manager's token, the real client (`ledger pull` / `ledger submit`) run as a process of its own
and timed to its answer, with its peak RSS, and the medians of several runs.

The servers are `ledger bench`'s (ledger.bench.run), always on a fresh embedded PostgreSQL under
a temporary LEDGER_HOME: a run's figures and its counts (nothing lost, nothing doubled) hold only
on a database that holds nothing else, so LEDGER_DATABASE_URL is not passed on.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from ledger.bench.run import _free_port, _server

__all__ = [
    "ClientRun",
    "Served",
    "client_env",
    "embedded_only",
    "entries_of",
    "machine",
    "medians",
    "run_client",
    "serving",
]

# What the client reads from the environment: the server, the token and its state, nothing of the
# bench's own settings (a LEDGER_* variable of the server's would be ignored, an XDG_* one would
# resume another run's uploads).
_CLIENT_PREFIXES = ("LEDGER_", "XDG_")


@dataclass(frozen=True)
class Served:
    base_url: str
    home: Path
    admin: str  # the first-start admin token
    manager: str  # a lab_manager token for ``lab``
    lab: str
    events: list[dict[str, Any]]  # the worker's `staged` and `import_done` log events, as they come

    def import_status(self, task_id: str) -> dict[str, Any]:
        with httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.admin}"}) as client:
            response = client.get(f"/imports/{task_id}")
            response.raise_for_status()
            return dict(response.json())


@contextmanager
def embedded_only() -> Iterator[None]:
    """`ledger bench`'s server helper passes this process's environment on: without
    LEDGER_DATABASE_URL, every server it starts runs on an embedded PostgreSQL of its own."""
    saved = os.environ.pop("LEDGER_DATABASE_URL", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["LEDGER_DATABASE_URL"] = saved


@contextmanager
def serving(parent: Path, lab: str) -> Iterator[Served]:
    """`ledger serve` on 127.0.0.1 on a fresh embedded PostgreSQL under a temporary LEDGER_HOME in
    ``parent``, ready, with ``lab`` registered and a lab manager's token for it."""
    with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=parent) as home, embedded_only():
        Path(home).chmod(0o755)  # the embedded server runs as its own system user
        port = _free_port()
        with _server(Path(home), port) as (_proc, admin, events):
            base_url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin}"}, timeout=60) as client:
                _wait_ready(client)
                client.post("/labs", json={"name": lab}).raise_for_status()
                created = client.post("/tokens", json={"role": "lab_manager", "labs": [lab], "label": "bench"})
                created.raise_for_status()
            manager = created.json()["token"]
            yield Served(base_url=base_url, home=Path(home), admin=admin, manager=manager, lab=lab, events=events)


def _wait_ready(client: httpx.Client, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server was not ready after {timeout:g} s")


class ClientRun(msgspec.Struct, kw_only=True):
    started: float  # time.monotonic() just before the process was started
    answered: float | None  # when its last stdout line (the --json answer) arrived
    exited: float
    code: int
    answer: dict[str, Any]  # that last line, decoded ({} when there was none)
    peak_rss_mb: float  # the process's own peak resident set (VmHWM), sampled until it exits
    cpu_seconds: float  # its user and system time
    stderr: str  # its tail, for the error message of a failed run

    @property
    def seconds(self) -> float:
        """From the start of the process to its answer (an import's end, as the client heard it)."""
        return (self.answered if self.answered is not None else self.exited) - self.started


def client_env(served: Served, state: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLIENT_PREFIXES)}
    env.update(
        LEDGER_URL=served.base_url,
        LEDGER_TOKEN=served.manager,
        XDG_STATE_HOME=str(state / "state"),
        XDG_CONFIG_HOME=str(state / "config"),
    )
    env.update(extra or {})
    return env


class _PeakRss(threading.Thread):
    """The peak RSS of a process, read from its VmHWM every 20 ms until it exits: the kernel's own
    high-water mark of this process, so no peak between two reads is missed. Not wait4's
    ru_maxrss: after a fork the child's starts from the parent's, here the bench's own."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.status = Path(f"/proc/{pid}/status")
        self.kilobytes = 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.read()
            if self.done.wait(0.02):
                return

    def read(self) -> None:
        try:
            text = self.status.read_text()
        except OSError:  # gone
            return
        for line in text.splitlines():
            if line.startswith("VmHWM:"):  # absent once it is a zombie: the last read stands
                self.kilobytes = max(self.kilobytes, int(line.split()[1]))

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


def run_client(args: Sequence[str], env: dict[str, str], *, timeout: float = 1800.0) -> ClientRun:
    """``ledger ARGS`` as a process; timed from its start to its last line on stdout."""
    command = [sys.executable, "-m", "ledger.cli.main", *args]
    started = time.monotonic()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    errors: list[str] = []

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line))

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            errors.append(line)
            del errors[:-40]

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for reader in readers:
        reader.start()
    peak = _PeakRss(proc.pid)
    peak.start()
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        # wait4 rather than Popen.wait: this child's own CPU time, which the machine's other load
        # does not stretch as it does the wall time.
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        watchdog.cancel()
        peak.stop()
    exited = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join(timeout=10)
    answered, answer = None, {}
    if lines and lines[-1][1].startswith("{"):
        answered = lines[-1][0]
        try:
            answer = msgspec.json.decode(lines[-1][1])
        except msgspec.DecodeError:
            answered = None
    return ClientRun(
        started=started,
        answered=answered,
        exited=exited,
        code=proc.returncode,
        answer=answer,
        peak_rss_mb=round(peak.kilobytes / 1024, 1),
        cpu_seconds=round(usage.ru_utime + usage.ru_stime, 3),
        stderr="".join(errors),
    )


async def entries_of(home: Path, task_id: str) -> tuple[int, int]:
    """The asset entries an import committed on the server under ``home``, and their distinct
    asset ids: the ledger's own count, beside what the import's status says."""
    from ledger.config import Settings
    from ledger.db.embedded import resolve_database
    from ledger.db.pool import connect

    with embedded_only():
        url, _handle = await asyncio.to_thread(resolve_database, Settings.from_env(home=home), stop_on_exit=False)
    conn = await connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(asset_id) AS entries, count(DISTINCT asset_id) AS assets"
            " FROM ledger_entries WHERE import_id = $1::uuid",
            task_id,
        )
        assert row is not None
        return int(row["entries"]), int(row["assets"])
    finally:
        await conn.close()


def machine() -> dict[str, Any]:
    """What the figures were measured on, and how busy it was when this was asked."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average_1m": round(load[0], 2),
        "load_average_5m": round(load[1], 2),
    }


def medians(results: Sequence[msgspec.Struct], fixed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Field-wise medians of several runs, with ``spread`` = [min, max] of every field that is not
    in ``fixed`` (the machine drifts: the noise shows next to the median)."""
    out: dict[str, Any] = {"runs": len(results)}
    spread: dict[str, list[Any]] = {}
    for field in type(results[0]).__struct_fields__:
        values = [getattr(r, field) for r in results]
        if all(isinstance(v, bool) for v in values):
            out[field] = all(values)
        elif all(isinstance(v, int | float) for v in values):
            out[field] = statistics.median(values)
            if len(values) > 1 and field not in fixed:
                spread[field] = [min(values), max(values)]
        else:
            present = [v for v in values if v is not None]
            if present and all(isinstance(v, int | float) for v in present):
                out[field] = statistics.median(present)
            else:
                out[field] = values[0]
    out["spread"] = spread
    return out
