"""`ledger bench`: import a synthetic manifest through the HTTP API and measure it.

Each run starts its own `ledger serve` (on a fresh embedded PostgreSQL unless
LEDGER_DATABASE_URL is set), times a raw COPY of the same file into an indexed table on the
same server as the baseline, then submits the manifest and measures end to end, sampling
the worker's RSS and the latency of other endpoints while the import runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
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
    worker_peak_rss_mb: float
    submit_p95_ms: float
    assets_p50_ms: float | None
    assets_p95_ms: float | None
    status_p50_ms: float | None
    status_p95_ms: float | None
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    verified: bool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server(home: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {**os.environ, "LEDGER_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
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
        yield proc, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


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


async def _one_run(path: Path, rows: int, concurrent: int, home: Path) -> BenchResult:
    from ledger.cli.main import resolve_database
    from ledger.config import Settings

    port = _free_port()
    with _server(home, port) as (proc, token):
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
            await _wait_ready(client)
            database_url, _handle = await asyncio.to_thread(
                resolve_database, Settings.from_env(home=home), stop_on_exit=False
            )
            copy_seconds = await _copy_baseline(database_url, path)

            workers = [
                c for c in psutil.Process(proc.pid).children(recursive=True) if "worker" in " ".join(c.cmdline())
            ]
            peak_rss = 0
            latencies: dict[str, list[float]] = {"assets": [], "status": [], "submit": []}
            done = asyncio.Event()
            task_ids: list[str] = []

            async def sample() -> None:
                nonlocal peak_rss
                while not done.is_set():
                    for w in workers:
                        with suppress(psutil.NoSuchProcess):
                            peak_rss = max(peak_rss, w.memory_info().rss)
                    t0 = time.perf_counter()
                    await client.get("/assets", params={"limit": 50})
                    latencies["assets"].append(time.perf_counter() - t0)
                    if task_ids:
                        t0 = time.perf_counter()
                        await client.get(f"/imports/{task_ids[0]}")
                        latencies["status"].append(time.perf_counter() - t0)
                    await asyncio.sleep(0.1)

            async def submit(i: int) -> dict[str, Any]:
                with path.open("rb") as fh:
                    t0 = time.perf_counter()
                    response = await client.post(
                        "/imports",
                        files={"file": (path.name, fh, "text/csv")},
                        data={"lab": "bench"},
                        headers={"Idempotency-Key": f"bench-{i}"},
                    )
                    latencies["submit"].append(time.perf_counter() - t0)
                response.raise_for_status()
                task_id = response.json()["task_id"]
                task_ids.append(task_id)
                while True:
                    status: dict[str, Any] = (await client.get(f"/imports/{task_id}")).json()
                    if status["status"] in ("done", "failed", "cancelled"):
                        return status
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            start = time.perf_counter()
            statuses = await asyncio.gather(*(submit(i) for i in range(concurrent)))
            seconds = time.perf_counter() - start
            done.set()
            await sampler
            failed = [s for s in statuses if s["status"] != "done"]
            if failed:
                raise RuntimeError(f"import failed: {failed[0]['error']}")
            verified = (await client.get("/audit/verify")).json()["ok"]
    total_rows = rows * concurrent
    return BenchResult(
        rows=rows,
        concurrent=concurrent,
        file_bytes=path.stat().st_size,
        seconds=round(seconds, 3),
        rows_per_second=round(total_rows / seconds),
        copy_seconds=round(copy_seconds, 3),
        ratio_to_copy=round(seconds / (copy_seconds * concurrent), 2),
        worker_peak_rss_mb=round(peak_rss / 2**20, 1),
        submit_p95_ms=_percentile(latencies["submit"], 0.95) or 0.0,
        assets_p50_ms=_percentile(latencies["assets"], 0.50),
        assets_p95_ms=_percentile(latencies["assets"], 0.95),
        status_p50_ms=_percentile(latencies["status"], 0.50),
        status_p95_ms=_percentile(latencies["status"], 0.95),
        rows_committed=sum(s["rows_committed"] for s in statuses),
        rows_duplicate=sum(s["rows_duplicate"] for s in statuses),
        rows_quarantined=sum(s["rows_quarantined"] for s in statuses),
        verified=bool(verified),
    )


def run_bench(rows: int, *, concurrent: int = 1, runs: int = 3, data_dir: Path) -> list[BenchResult]:
    path = data_dir / f"manifest-{rows}.csv"
    if not path.exists():
        write_manifest(path, rows)
    results: list[BenchResult] = []
    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=data_dir) as home:
            Path(home).chmod(0o755)  # the embedded server runs as its own system user
            result = asyncio.run(_one_run(path, rows, concurrent, Path(home)))
        print(f"run {i + 1}/{runs}: " + msgspec.json.encode(result).decode(), file=sys.stderr, flush=True)
        results.append(result)
    return results


def median_result(results: list[BenchResult]) -> dict[str, Any]:
    """Field-wise median of several runs (the machines are noisy)."""
    out: dict[str, Any] = {}
    for field in BenchResult.__struct_fields__:
        values = [getattr(r, field) for r in results]
        if all(isinstance(v, bool) for v in values):
            out[field] = all(values)
        elif all(isinstance(v, int | float) for v in values):
            out[field] = statistics.median(values)
        else:
            out[field] = values[0]
    return out
