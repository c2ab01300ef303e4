"""`ledger bench-submit`: `ledger submit` of the sample manifests, the real client as a process,
against `ledger bench`'s in-process figure for the same file.

Each run, on fresh servers (ledger.bench.client_process; embedded PostgreSQL each):

1. the baseline: one run of `ledger bench` (ledger.bench.run) on the ``rows`` sample, whose
   ``seconds`` run from the first byte of its POST /imports to ``done``;
2. `ledger submit --json` of the same file as a lab manager, timed from the process's start to
   its answer (the import ``done``, as the client heard it through the event stream): the sha256
   of the file, the tus upload in 8 MiB chunks, the import; and the process's peak RSS;
3. the same for the ``small_rows`` sample, for its peak RSS beside the big file's.

The baseline and the client's big run take turns in going first (the machine drifts within a
run's minutes too). ``ratio`` is the client's time over the baseline's, per run, then the median.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

from ledger.bench.client_process import ClientRun, client_env, embedded_only, machine, medians, run_client, serving
from ledger.bench.manifest import write_manifest
from ledger.bench.run import run_bench

__all__ = ["SubmitRun", "run_submit_bench"]

LAB = "bench"


class SubmitRun(msgspec.Struct, kw_only=True):
    rows: int
    file_bytes: int
    seconds: float  # `ledger submit`: the process's start to its answer, the import done
    rows_per_second: float
    bench_seconds: float  # `ledger bench` (in process): the first byte sent to done
    ratio: float  # seconds / bench_seconds
    client_peak_rss_mb: float
    client_cpu_seconds: float
    small_rows: int
    small_seconds: float
    small_client_peak_rss_mb: float
    rss_ratio: float  # the big file's peak RSS over the small one's
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    same_counts: bool  # the client's import committed, skipped and quarantined what the baseline's did


def _submit(parent: Path, path: Path, timeout: float) -> ClientRun:
    with serving(parent, LAB) as served, tempfile.TemporaryDirectory(prefix="ledger-bench-submit-", dir=parent) as w:
        ran = run_client(["submit", "--json", str(path)], client_env(served, Path(w)), timeout=timeout)
    if ran.answer.get("status") != "done":
        raise RuntimeError(
            f"`ledger submit {path.name}` ended {ran.answer.get('status')!r} (exit {ran.code}): "
            f"{ran.answer.get('error')}\n{ran.stderr}"
        )
    return ran


def _one_run(
    parent: Path, data_dir: Path, rows: int, small_rows: int, *, client_first: bool, timeout: float
) -> SubmitRun:
    path = data_dir / f"manifest-{rows}.csv"
    small = data_dir / f"manifest-{small_rows}.csv"
    big = _submit(parent, path, timeout) if client_first else None
    with embedded_only():
        baseline = run_bench(rows, runs=1, data_dir=data_dir)[0]
    if big is None:
        big = _submit(parent, path, timeout)
    little = _submit(parent, small, timeout)
    answer = big.answer
    counts = (int(answer["rows_committed"]), int(answer["rows_duplicate"]), int(answer["rows_quarantined"]))
    return SubmitRun(
        rows=rows,
        file_bytes=path.stat().st_size,
        seconds=round(big.seconds, 3),
        rows_per_second=round(rows / big.seconds),
        bench_seconds=baseline.seconds,
        ratio=round(big.seconds / baseline.seconds, 3),
        client_peak_rss_mb=big.peak_rss_mb,
        client_cpu_seconds=big.cpu_seconds,
        small_rows=small_rows,
        small_seconds=round(little.seconds, 3),
        small_client_peak_rss_mb=little.peak_rss_mb,
        rss_ratio=round(big.peak_rss_mb / little.peak_rss_mb, 3),
        rows_committed=counts[0],
        rows_duplicate=counts[1],
        rows_quarantined=counts[2],
        same_counts=counts == (baseline.rows_committed, baseline.rows_duplicate, baseline.rows_quarantined),
    )


_FIXED = frozenset({"rows", "file_bytes", "small_rows", "rows_committed", "rows_duplicate", "rows_quarantined"})


def run_submit_bench(
    data_dir: Path, *, rows: int = 1_000_000, small_rows: int = 100_000, runs: int = 3, timeout: float = 1800.0
) -> dict[str, Any]:
    """``runs`` paired runs; the medians, each run, the targets."""
    for n in (rows, small_rows):
        if not (data_dir / f"manifest-{n}.csv").exists():
            write_manifest(data_dir / f"manifest-{n}.csv", n)
    before = machine()
    results: list[SubmitRun] = []
    for i in range(runs):
        result = _one_run(data_dir, data_dir, rows, small_rows, client_first=i % 2 == 1, timeout=timeout)
        print(f"run {i + 1}/{runs}: " + msgspec.json.encode(result).decode(), file=sys.stderr, flush=True)
        results.append(result)
    summary = medians(results, _FIXED)
    # The median of the per-run ratios (each pairs two imports of the same minutes), not the ratio
    # of the medians.
    summary["ratio"] = statistics.median(r.ratio for r in results)
    summary.update(
        targets={
            "within_10_percent_of_bench": summary["ratio"] <= 1.10,
            # Flat: a file ten times the size costs the client no more than a tenth more memory.
            "client_rss_flat_in_file_size": all(r.rss_ratio <= 1.10 for r in results),
            "same_counts_as_bench": all(r.same_counts for r in results),
        },
        machine={"before": before, "after": machine()},
        each=[msgspec.to_builtins(r) for r in results],
    )
    return summary
