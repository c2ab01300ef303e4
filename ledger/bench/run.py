"""`ledger bench`: import a synthetic manifest through the HTTP API and measure it.

Each run starts its own `ledger serve` (on a fresh embedded PostgreSQL unless
LEDGER_DATABASE_URL is set), times a raw COPY of the same file into an indexed table on the
same server as the baseline, then submits the manifest and measures end to end, sampling
the worker's RSS and the latency of other endpoints while the import runs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psutil

from ledger.bench.manifest import HEADER, write_manifest

__all__ = ["BenchResult", "run_bench"]


class BenchResult(msgspec.Struct, kw_only=True):
    rows: int
    concurrent: int
    file_bytes: int
    seconds: float
    rows_per_second: float
    copy_seconds: float
    ratio_to_copy: float
    worker_peak_rss_mb: float  # the worker process and its staging processes, summed
    staging_seconds: float | None  # from the worker's log: start of the job to all rows staged
    finalize_seconds: float | None  # the final transaction
    finalize_steps: dict[str, float]  # its steps (of the first import when concurrent)
    # From done to GET /assets showing the import (the projection is applied after the commit).
    assets_current_seconds: float
    submit_after_body_ms: float  # POST of the manifest: response time after its last byte was sent
    submit_small_p95_ms: float  # POST of a 1 KB manifest (dry run), before the big import
    submit_small_max_ms: float  # the slowest of those POSTs
    assets_p50_ms: float | None
    assets_p95_ms: float | None
    status_p50_ms: float | None
    status_p95_ms: float | None
    # How far the import's ETA was off, in percent of the time that was really left (+: it
    # promised a later end than came, -: an earlier one), at a quarter, half and three quarters
    # of its run; None: it said unknown. A fresh server: the ETA had no history to learn from.
    eta_error_25_pct: float | None
    eta_error_50_pct: float | None
    eta_error_75_pct: float | None
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    verified: bool
    # With --concurrent K: the same K imports one after the other (each submitted when the
    # previous one is done), on a fresh server in the same run, and this run's time over that.
    sequential_seconds: float | None = None
    ratio_to_sequential: float | None = None
    # With --concurrent K: how far the ETA of the last of those one-after-the-other imports was
    # off, at a quarter, half and three quarters of its run; it learned from the ones before it.
    eta_learned_error_pct: dict[str, float | None] | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(home: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], str, list[dict[str, Any]]]]:
    env = {**os.environ, "LEDGER_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: list[dict[str, Any]] = []
    # Keep reading the server's output: a full pipe would block its workers' logging.
    threading.Thread(target=_drain, args=(proc.stderr, events), daemon=True).start()
    try:
        token = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip().startswith("ldg_"):
                token = line.strip()
            if "listening on" in line:
                break
        if not token:
            raise RuntimeError("the server did not print a first-start admin token (reused LEDGER_HOME?)")
        threading.Thread(target=_drain, args=(proc.stdout, []), daemon=True).start()
        yield proc, token, events
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        _wait_postmaster_gone(home / "pgdata")


def _wait_postmaster_gone(pgdata: Path, timeout: float = 120.0) -> None:
    """The embedded server's shutdown checkpoint can outlive the service after a big import; its
    directory must not be removed under it. Ask it to stop fast, then wait for it to go."""
    pid_file = pgdata / "postmaster.pid"
    deadline = time.monotonic() + timeout
    asked = False
    while pid_file.exists() and time.monotonic() < deadline:
        if not asked:
            with suppress(OSError, ValueError, IndexError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)  # "fast" shutdown
            asked = True
        time.sleep(0.2)


def _drain(stream: Any, events: list[dict[str, Any]]) -> None:
    """Collect the pipeline's JSON log events (stage and finalize timings) from the server."""
    for line in stream:
        if line.startswith("{") and ('"import_done"' in line or '"staged"' in line):
            with suppress(msgspec.DecodeError):
                events.append(msgspec.json.decode(line))


class _TimedFile:
    """A file whose read() notes when it hit the end: when the last body byte went out."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        self.eof_at: float | None = None

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        if not data and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return data

    def close(self) -> None:
        self._fh.close()


def _is_worker(proc: psutil.Process) -> bool:
    try:
        cmdline = proc.cmdline()
    except psutil.Error:  # gone, or a zombie
        return False
    return "ledger.cli.main" in cmdline and "worker" in cmdline


def _tree_rss(proc: psutil.Process) -> int:
    """RSS of a process plus its children (the staging processes of a worker)."""
    total = 0
    with suppress(psutil.Error):
        for p in [proc, *proc.children(recursive=True)]:
            with suppress(psutil.Error):
                total += p.memory_info().rss
    return total


_SMALL_POSTS = 40


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


async def _copy_baseline(database_url: str, path: Path) -> float:
    from ledger.db.pool import connect

    conn = await connect(database_url)
    try:
        columns = HEADER.split(",")
        await conn.execute("DROP TABLE IF EXISTS bench_copy")
        await conn.execute("CREATE TABLE bench_copy (" + ", ".join(f"{c} text" for c in columns) + ")")
        await conn.execute("CREATE INDEX ON bench_copy (asset_id, grant_code)")
        start = time.perf_counter()
        await conn.copy_to_table("bench_copy", source=path, format="csv", header=True)
        seconds = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_copy")
        return seconds
    finally:
        await conn.close()


async def _wait_ready(client: httpx.AsyncClient) -> None:
    for _ in range(600):
        try:
            if (await client.get("/health/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the server did not become ready")


async def _post_small_imports(client: httpx.AsyncClient, path: Path, latencies: list[float]) -> None:
    """POST a 1 KB dry run of the manifest's first rows, one after the other, timing each."""
    small = "\n".join(path.read_text(encoding="utf-8").splitlines()[:9]).encode() + b"\n"
    assert len(small) <= 1024
    # Enough POSTs for a 95th percentile that is not simply the slowest one (with ten,
    # it was): the slowest is reported beside it.
    for i in range(_SMALL_POSTS):
        t0 = time.perf_counter()
        response = await client.post(
            "/imports",
            files={"file": ("small.csv", small, "text/csv")},
            data={"lab": "bench", "dry_run": "true"},
            headers={"Idempotency-Key": f"small-{i}"},
        )
        latencies.append(time.perf_counter() - t0)
        response.raise_for_status()
        small_id = response.json()["task_id"]
        for _ in range(3000):  # small imports run first, so they do not overlap the big one
            if (await client.get(f"/imports/{small_id}")).json()["status"] in ("done", "failed"):
                break
            await asyncio.sleep(0.02)


class _Imports:
    """The big imports of one run, and what is sampled while they run: the workers' peak RSS,
    the latencies of other endpoints, and the watched import's ETAs."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        paths: list[Path],
        workers: list[psutil.Process],
        latencies: dict[str, list[float]],
        *,
        together: bool,
    ) -> None:
        concurrent = len(paths)
        self.client = client
        self.paths = paths
        self.workers = workers
        self.latencies = latencies
        self.together = together
        self.peak_rss = 0
        self.done = asyncio.Event()
        self.task_ids: list[str] = []
        # What one import's ETA said, and when: at once, the first; one after the other, the
        # last, which has the others to learn from.
        self.watched = 0 if together else concurrent - 1
        self.etas: list[tuple[float, float | None]] = []
        self.done_at = [0.0] * concurrent
        self.current_at = [0.0] * concurrent
        self.start = 0.0
        self.seconds = 0.0
        self.assets_current_seconds = 0.0

    async def run(self) -> list[dict[str, Any]]:
        """Submit every import, all at once or one after the other, sampling until all are done;
        their final statuses."""
        concurrent = len(self.paths)
        sampler = asyncio.create_task(self.sample())
        self.start = time.perf_counter()
        if self.together:
            statuses = list(await asyncio.gather(*(self.submit(i) for i in range(concurrent))))
        else:
            statuses = [await self.submit(i, wait_current=i == concurrent - 1) for i in range(concurrent)]
        self.seconds = max(self.done_at) - self.start
        self.assets_current_seconds = max(self.current_at) - max(self.done_at)
        self.done.set()
        await sampler
        return statuses

    async def sample(self) -> None:
        """Until done: the workers' RSS, and the latency of GET /assets and of the first import's status."""
        client, latencies = self.client, self.latencies
        while not self.done.is_set():
            for w in self.workers:
                self.peak_rss = max(self.peak_rss, _tree_rss(w))
            t0 = time.perf_counter()
            await client.get("/assets", params={"limit": 50})
            latencies["assets"].append(time.perf_counter() - t0)
            if self.task_ids:
                t0 = time.perf_counter()
                await client.get(f"/imports/{self.task_ids[0]}")
                latencies["status"].append(time.perf_counter() - t0)
            await asyncio.sleep(0.1)

    async def submit(self, i: int, *, wait_current: bool = True) -> dict[str, Any]:
        """POST manifest ``i`` and poll it to its end (and, with ``wait_current``, until GET /assets
        shows it); its final status."""
        client, path = self.client, self.paths[i]
        fh = _TimedFile(path)
        try:
            response = await client.post(
                "/imports",
                files={"file": (path.name, fh, "text/csv")},  # type: ignore[dict-item]
                data={"lab": "bench"},
                headers={"Idempotency-Key": f"bench-{i}"},
            )
            answered = time.perf_counter()
        finally:
            fh.close()
        if fh.eof_at is not None:
            self.latencies["submit"].append(answered - fh.eof_at)
        response.raise_for_status()
        task_id = response.json()["task_id"]
        self.task_ids.append(task_id)
        while True:
            status: dict[str, Any] = (await client.get(f"/imports/{task_id}")).json()
            if i == self.watched:
                self.etas.append((time.perf_counter(), status.get("eta_seconds")))
            if status["status"] in ("done", "failed", "cancelled"):
                self.done_at[i] = time.perf_counter()
                break
            await asyncio.sleep(0.05)
        while wait_current and status["status"] == "done" and status.get("assets_current") is False:
            await asyncio.sleep(0.05)
            status = (await client.get(f"/imports/{task_id}")).json()
        self.current_at[i] = time.perf_counter()
        return status


async def _one_run(paths: list[Path], rows: int, home: Path, *, together: bool = True) -> BenchResult:
    """Import every manifest of ``paths`` on a fresh server: all at once, or one after the other."""
    path = paths[0]
    from ledger.config import Settings
    from ledger.db.embedded import resolve_database

    port = _free_port()
    with _server(home, port) as (proc, token, events):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
            await _wait_ready(client)
            (await client.post("/labs", json={"name": "bench"})).raise_for_status()
            database_url, _handle = await asyncio.to_thread(
                resolve_database, Settings.from_env(home=home), stop_on_exit=False
            )
            copy_seconds = await _copy_baseline(database_url, path)

            workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if _is_worker(c)]
            latencies: dict[str, list[float]] = {"assets": [], "status": [], "submit": [], "small": []}
            await _post_small_imports(client, path, latencies["small"])
            imports = _Imports(client, paths, workers, latencies, together=together)
            statuses = await imports.run()
            failed = [s for s in statuses if s["status"] != "done"]
            if failed:
                raise RuntimeError(f"import failed: {failed[0]['error']}")
            verified = (await client.get("/audit/verify")).json()["ok"]
    return _bench_result(imports, statuses, events, rows=rows, copy_seconds=copy_seconds, verified=bool(verified))


def _bench_result(
    imports: _Imports,
    statuses: list[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    rows: int,
    copy_seconds: float,
    verified: bool,
) -> BenchResult:
    """One run's figures, from its imports, their final statuses and the server's log events."""
    concurrent, seconds, watched, done_at = len(imports.paths), imports.seconds, imports.watched, imports.done_at
    began = imports.start if imports.together or watched == 0 else done_at[watched - 1]
    eta_error = {q: _eta_error(imports.etas, began, done_at[watched], q) for q in (0.25, 0.5, 0.75)}
    total_rows = rows * concurrent
    big = [e for e in events if e.get("rows", e.get("rows_total", 0)) == rows]
    staged = [e for e in big if e.get("event") == "staged"]
    finished = [e for e in big if e.get("event") == "import_done"]
    latencies = imports.latencies
    return BenchResult(
        rows=rows,
        concurrent=concurrent,
        file_bytes=imports.paths[0].stat().st_size,
        seconds=round(seconds, 3),
        rows_per_second=round(total_rows / seconds),
        copy_seconds=round(copy_seconds, 3),
        ratio_to_copy=round(seconds / (copy_seconds * concurrent), 2),
        worker_peak_rss_mb=round(imports.peak_rss / 2**20, 1),
        staging_seconds=max((e["seconds"] for e in staged), default=None),
        finalize_seconds=max((e["finalize_seconds"] for e in finished), default=None),
        finalize_steps=finished[0]["finalize_steps"] if finished else {},
        assets_current_seconds=round(imports.assets_current_seconds, 3),
        submit_after_body_ms=_percentile(latencies["submit"], 1.0) or 0.0,
        submit_small_p95_ms=_percentile(latencies["small"], 0.95) or 0.0,
        submit_small_max_ms=_percentile(latencies["small"], 1.0) or 0.0,
        assets_p50_ms=_percentile(latencies["assets"], 0.50),
        assets_p95_ms=_percentile(latencies["assets"], 0.95),
        status_p50_ms=_percentile(latencies["status"], 0.50),
        status_p95_ms=_percentile(latencies["status"], 0.95),
        eta_error_25_pct=eta_error[0.25],
        eta_error_50_pct=eta_error[0.5],
        eta_error_75_pct=eta_error[0.75],
        rows_committed=sum(s["rows_committed"] for s in statuses),
        rows_duplicate=sum(s["rows_duplicate"] for s in statuses),
        rows_quarantined=sum(s["rows_quarantined"] for s in statuses),
        verified=verified,
    )


def _eta_error(etas: list[tuple[float, float | None]], start: float, end: float, at: float) -> float | None:
    """The ETA sampled nearest ``at`` of the way from ``start`` to ``end``, as a percentage off
    the time that was really left then."""
    target = start + at * (end - start)
    when, eta = min(etas, key=lambda sample: abs(sample[0] - target), default=(target, None))
    left = end - when
    if eta is None or left <= 0:
        return None
    return round(100 * (eta - left) / left, 1)


def run_bench(rows: int, *, concurrent: int = 1, runs: int = 3, data_dir: Path) -> list[BenchResult]:
    # Concurrent imports get manifests of their own (other seeds: other grant codes, so
    # other keys), so each commits its rows as it would alone, one after the other.
    paths = [
        data_dir / (f"manifest-{rows}.csv" if i == 0 else f"manifest-{rows}-seed{i + 1}.csv") for i in range(concurrent)
    ]
    for i, path in enumerate(paths):
        if not path.exists():
            write_manifest(path, rows, seed=i + 1)
    results: list[BenchResult] = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=data_dir) as home:
            Path(home).chmod(0o755)  # the embedded server runs as its own system user
            result = asyncio.run(_one_run(paths, rows, Path(home)))
        if concurrent > 1:
            # The baseline of "at once": the same imports one after the other, in the same run,
            # on a fresh server of their own (each waits for the previous one's done).
            with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=data_dir) as home:
                Path(home).chmod(0o755)
                alone = asyncio.run(_one_run(paths, rows, Path(home), together=False))
            result = msgspec.structs.replace(
                result,
                sequential_seconds=alone.seconds,
                ratio_to_sequential=round(result.seconds / alone.seconds, 3),
                eta_learned_error_pct={
                    "25%": alone.eta_error_25_pct,
                    "50%": alone.eta_error_50_pct,
                    "75%": alone.eta_error_75_pct,
                },
            )
        print(f"run {i + 1}/{runs}: " + msgspec.json.encode(result).decode(), file=sys.stderr, flush=True)
        results.append(result)
    return results


def median_result(results: list[BenchResult]) -> dict[str, Any]:
    """Field-wise median of several runs (the machines are noisy), with the spread of the
    timings as [min, max] so the noise is visible next to the median."""
    out: dict[str, Any] = {"runs": len(results)}
    spread: dict[str, list[Any]] = {}
    for field in BenchResult.__struct_fields__:
        values = [getattr(r, field) for r in results]
        if all(isinstance(v, bool) for v in values):
            out[field] = all(values)
        elif all(isinstance(v, int | float) for v in values):
            out[field] = statistics.median(values)
            if len(values) > 1 and field not in _FIXED:
                spread[field] = [min(values), max(values)]
        else:
            out[field] = values[0]
    out["spread"] = spread
    return out


# Fields that are the same in every run of one command: no spread to show.
_FIXED = frozenset({"rows", "concurrent", "file_bytes", "rows_committed", "rows_duplicate", "rows_quarantined"})
