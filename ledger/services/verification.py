"""The chain as auditors check it on the server: its head, and every hash recomputed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import multiprocessing
import os
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ledger import audit_log
from ledger.core.verify import VerifyReport
from ledger.db.head import Head, get_head
from ledger.db.pool import connect
from ledger.db.verification import verify_ledger

__all__ = ["VERIFY_WORKERS", "Head", "VerifyState", "head", "results", "start", "state", "verify"]

# Processes that verify a large ledger in parallel ranges.
VERIFY_WORKERS = min(4, os.cpu_count() or 1)

# One verification at a time per server (per pool): a caller that comes while one runs waits
# for it and gets its report, rather than starting VERIFY_WORKERS more processes.
_running: dict[asyncpg.Pool[Any], asyncio.Task[VerifyReport]] = {}
# The last report each server finished, and when: what a page shows while it polls.
_last: dict[asyncpg.Pool[Any], tuple[VerifyReport, datetime]] = {}
# The verifications each server finished, by result (intact, tampered, error): GET /metrics.
_results: dict[asyncpg.Pool[Any], dict[str, int]] = {}


class VerifyState(msgspec.Struct, frozen=True):
    """Whether a verification runs now, and the last one's report (None before the first)."""

    running: bool
    report: VerifyReport | None
    finished_at: datetime | None


async def head(pool: asyncpg.Pool[Any]) -> Head:
    return await get_head(pool)


async def _verify(pool: asyncpg.Pool[Any], database_url: str) -> VerifyReport:
    # Hashing is CPU-bound Python: in the API's event loop it held every other request for the
    # whole verification of a small ledger (10,000 records: 200 - 300 ms), and in a thread of
    # the API's process it still took the GIL from them (a page's p95 145 ms). A process of its
    # own (kept, so its start-up is paid once) leaves the API's loop free; a large ledger is
    # split over further processes from there (ledger.db.verification).
    del pool
    global _executor
    if _executor is None:
        _executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
    try:
        report = await asyncio.get_running_loop().run_in_executor(_executor, _verify_in_process, database_url)
    except concurrent.futures.process.BrokenProcessPool:
        _executor = None  # the process died (the OOM killer, say): the next call starts another
        raise
    # One line per verification, however many callers share it: the task runs in the context
    # of the request that started it, whose principal and client the line names.
    audit_log.emit(audit_log.verification_event(report))
    return report


_executor: concurrent.futures.ProcessPoolExecutor | None = None


def _verify_in_process(database_url: str) -> VerifyReport:
    return asyncio.run(_verify_alone(database_url))


async def _verify_alone(database_url: str) -> VerifyReport:
    conn = await connect(database_url, application_name="ledger verify")
    try:
        return await verify_ledger(conn, database_url=database_url, workers=VERIFY_WORKERS)
    finally:
        await conn.close()


def start(pool: asyncpg.Pool[Any], database_url: str) -> asyncio.Task[VerifyReport]:
    """The verification running now, started if none is. It runs to its end whoever waits for
    it: a page starts it and polls (a 1M-record ledger takes seconds), an API call awaits it."""
    task = _running.get(pool)
    if task is None:
        task = asyncio.ensure_future(_verify(pool, database_url))
        _running[pool] = task

        def forget(done: asyncio.Task[VerifyReport]) -> None:
            if _running.get(pool) is done:
                del _running[pool]
            if done.cancelled():
                return
            failed = done.exception() is not None  # retrieved: the callers still waiting re-raise it
            if not failed:
                _last[pool] = (done.result(), datetime.now(UTC))
            result = "error" if failed else "intact" if done.result().ok else "tampered"
            tally = _results.setdefault(pool, {})
            tally[result] = tally.get(result, 0) + 1

        task.add_done_callback(forget)
    return task


def results(pool: asyncpg.Pool[Any]) -> dict[str, int]:
    """How many verifications this server has finished since it started, by result."""
    return dict(_results.get(pool, {}))


def state(pool: asyncpg.Pool[Any]) -> VerifyState:
    last = _last.get(pool)
    return VerifyState(
        running=pool in _running,
        report=None if last is None else last[0],
        finished_at=None if last is None else last[1],
    )


async def verify(pool: asyncpg.Pool[Any], database_url: str) -> VerifyReport:
    """Recompute every record hash, batch root and chain link (large ledgers in parallel ranges).
    Shared: while a verification runs, every caller gets that one's report."""
    # A caller that goes away (a closed connection) does not cancel the others' verification.
    return await asyncio.shield(start(pool, database_url))
