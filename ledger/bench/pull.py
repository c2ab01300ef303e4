"""`ledger bench-pull`: `ledger pull` of a whole upstream, end to end, against a fresh server.

Each run starts `ledger serve` on a fresh embedded PostgreSQL (ledger.bench.client_process), a lab
and a lab manager's token, and the test upstream (ledger.testing.upstream) as a process of its
own on 127.0.0.1: ``records`` inventory records, pages of ``page_size`` (page-number pagination,
so up to ``max_in_flight`` pages are asked for at once), each answered after ``latency`` seconds.
Then `ledger pull --json` runs as a process, the real client, and is timed from its start to its
answer (the import ``done``). The upstream says when its first request came and its last answer
went (the sync's fetch time) and the most requests it ever had in flight; the ledger says how
many asset entries the import committed, and for how many distinct assets.

A run fails (and the command exits 1) when the upstream saw more than max_in_flight requests at
once, or when the ledger does not hold every record exactly once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import msgspec

from ledger.bench.client_process import ClientRun, Served, client_env, entries_of, machine, medians, run_client, serving

__all__ = ["DEFINITION", "PullRun", "run_pull_bench", "upstream_process"]

LAB = "chem-lab"
SOURCE = "bench-wms"
# The variable the source's auth_env names: the upstream's secret comes from the environment, as
# in a real deployment (the test upstream accepts anything).
SECRET_ENV = "BENCH_WMS_TOKEN"

# The definition of tests/connectors/test_pull_live.py, with the bench's page size and limit.
DEFINITION = """
name = "{name}"
lab = "{lab}"
policy = "lab-inventory"
base_url = "{url}"
resource = "/inventory"
auth_header = "Authorization"
auth_env = "{secret_env}"
records = "data.items"
key = "id"
max_in_flight = {max_in_flight}

[pagination]
type = "page"
page_param = "page"
page_size_param = "limit"
page_size = {page_size}

[incremental]
field = "updated_at"
param = "updated_since"

[map]
asset_id = "tag"
grant_code = "grant.code"
category = "kind"
quantity = "qty"
location = "room"
acquisition_date = "acquired"
cas_number = "cas"
hazard_class = "hazard"
unit_cost = "cost"
description = "name"
"""


class PullRun(msgspec.Struct, kw_only=True):
    records: int
    seconds: float  # the process's start to its answer: the import done
    records_per_second: float  # records / seconds
    fetch_seconds: float  # the upstream's first request arriving to its last answer going
    startup_seconds: float  # the process's start to the upstream's first request
    after_fetch_seconds: float  # the last answer to done: the manifest, the sync's record, upload, import
    # Its pieces, from the import's status (the server's clock is this machine's): the last answer
    # to the import's creation (the manifest's second pass, the sync recorded, the sha256 and the
    # upload), its wait in the queue, its run in the worker; and from the worker's log, staging
    # and the final transaction.
    upload_seconds: float
    queued_seconds: float
    import_seconds: float
    staging_seconds: float | None
    finalize_seconds: float | None
    pages: int
    requests: int  # all the upstream answered, the pages asked for past the last one included
    in_flight_max: int
    client_peak_rss_mb: float
    client_cpu_seconds: float  # the pull process's user and system time, the whole run
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    entries: int  # asset entries the import put on the ledger
    distinct_assets: int
    exit_code: int
    in_flight_held: bool  # in_flight_max <= max_in_flight
    exact: bool  # every record on the ledger exactly once


class _Upstream:
    """The test upstream's process: its URL, and its counters once it has been stopped."""

    def __init__(self, records: int, latency: float, page_size: int, errors: IO[bytes]) -> None:
        self.errors = errors
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ledger.testing.upstream_process",
                "--records",
                str(records),
                "--latency",
                str(latency),
                "--page-size-max",
                str(page_size),
                "--encode-ahead",
                str(page_size),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        if not first:
            self.proc.wait(timeout=30)
            self.errors.seek(0)
            raise RuntimeError(
                f"the upstream did not start (exit {self.proc.returncode}): {self.errors.read().decode()[-2000:]}"
            )
        self.url: str = json.loads(first)["url"]

    def stop(self) -> dict[str, Any]:
        """Its counters: requests, in_flight_max, first_request, answered_last."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=30)
        return dict(json.loads(line)) if line else {}


@contextmanager
def upstream_process(records: int, latency: float, page_size: int) -> Iterator[_Upstream]:
    """The test upstream as a process (ledger.testing.upstream_process): ``records`` inventory
    records in pages of at most ``page_size``, encoded ahead, each answered after ``latency`` s."""
    # Its tracebacks of the connections the client drops (the pages asked for past the last are
    # cancelled) are noise beside the bench's lines: kept aside, shown if it does not start.
    with tempfile.TemporaryFile() as errors:
        up = _Upstream(records, latency, page_size, errors)
        try:
            yield up
        finally:
            if up.proc.poll() is None:
                up.proc.kill()
                up.proc.wait(timeout=30)


def _one_run(
    parent: Path, *, records: int, latency: float, page_size: int, max_in_flight: int, timeout: float
) -> PullRun:
    with (
        serving(parent, LAB) as served,
        upstream_process(records, latency, page_size) as up,
        tempfile.TemporaryDirectory(prefix="ledger-bench-pull-", dir=parent) as work,
    ):
        source = Path(work) / f"{SOURCE}.toml"
        source.write_text(
            DEFINITION.format(
                name=SOURCE,
                lab=LAB,
                url=up.url,
                secret_env=SECRET_ENV,
                max_in_flight=max_in_flight,
                page_size=page_size,
            ),
            encoding="utf-8",
        )
        env = client_env(served, Path(work), {SECRET_ENV: "Bearer bench"})
        ran = run_client(["pull", "--json", str(source)], env, timeout=timeout)
        counters = up.stop()
        return _result(served, ran, counters, records=records, max_in_flight=max_in_flight)


def _result(served: Served, ran: ClientRun, counters: dict[str, Any], *, records: int, max_in_flight: int) -> PullRun:
    answer = ran.answer
    if answer.get("status") != "done" or not answer.get("task_id"):
        raise RuntimeError(
            f"`ledger pull` ended {answer.get('status')!r} (exit {ran.code}): {answer.get('error')}\n{ran.stderr}"
        )
    entries, assets = asyncio.run(entries_of(served.home, str(answer["task_id"])))
    first, last = counters.get("first_request"), counters.get("answered_last")
    if first is None or last is None:
        raise RuntimeError("the upstream answered no request")
    in_flight_max = int(counters["in_flight_max"])
    status = served.import_status(str(answer["task_id"]))
    created, began, ended = (_monotonic(status[k]) for k in ("created_at", "started_at", "finished_at"))
    staged = [e for e in served.events if e.get("event") == "staged"]
    finished = [e for e in served.events if e.get("event") == "import_done"]
    return PullRun(
        records=records,
        seconds=round(ran.seconds, 3),
        records_per_second=round(records / ran.seconds),
        fetch_seconds=round(last - first, 3),
        startup_seconds=round(first - ran.started, 3),
        after_fetch_seconds=round((ran.answered or ran.exited) - last, 3),
        upload_seconds=round(created - last, 3),
        queued_seconds=round(began - created, 3),
        import_seconds=round(ended - began, 3),
        staging_seconds=staged[-1]["seconds"] if staged else None,
        finalize_seconds=finished[-1]["finalize_seconds"] if finished else None,
        pages=int(answer.get("pages") or 0),
        requests=int(counters["requests"]),
        in_flight_max=in_flight_max,
        client_peak_rss_mb=ran.peak_rss_mb,
        client_cpu_seconds=ran.cpu_seconds,
        rows_committed=int(answer["rows_committed"]),
        rows_duplicate=int(answer["rows_duplicate"]),
        rows_quarantined=int(answer["rows_quarantined"]),
        entries=entries,
        distinct_assets=assets,
        exit_code=ran.code,
        in_flight_held=in_flight_max <= max_in_flight,
        exact=entries == assets == records == int(answer["rows_committed"]) == int(answer["records"]),
    )


def _monotonic(stamp: str) -> float:
    """A timestamp of the server's (this machine's wall clock) on the monotonic clock."""
    return datetime.fromisoformat(stamp).timestamp() - (time.time() - time.monotonic())


# Fields that are the same in every run of one command: no spread to show.
_FIXED = frozenset({"records", "pages", "rows_committed", "rows_duplicate", "rows_quarantined", "entries"})


def run_pull_bench(
    parent: Path,
    *,
    records: int = 100_000,
    latency: float = 0.02,
    page_size: int = 500,
    max_in_flight: int = 8,
    runs: int = 3,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """``runs`` runs, each on a fresh server and upstream; the medians, each run, the targets."""
    before = machine()
    results: list[PullRun] = []
    for i in range(runs):
        result = _one_run(
            parent, records=records, latency=latency, page_size=page_size, max_in_flight=max_in_flight, timeout=timeout
        )
        print(f"run {i + 1}/{runs}: " + msgspec.json.encode(result).decode(), file=sys.stderr, flush=True)
        results.append(result)
    summary = medians(results, _FIXED)
    rate = summary["records_per_second"]
    peak = max(r.in_flight_max for r in results)
    summary.update(
        latency_seconds=latency,
        page_size=page_size,
        max_in_flight=max_in_flight,
        targets={
            "records_per_second_at_least_10000": rate >= 10_000,
            "in_flight_never_over_the_limit": all(r.in_flight_held for r in results),
            "in_flight_reached_the_limit": peak == max_in_flight,
            "every_record_once": all(r.exact for r in results),
        },
        machine={"before": before, "after": machine()},
        each=[msgspec.to_builtins(r) for r in results],
    )
    return summary
