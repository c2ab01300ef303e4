"""What a lab manager watches while an import runs: its rate, its ETA and its event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ledger.db import imports as imports_db

__all__ = ["EVENT_INTERVAL_SECONDS", "FINAL_STEP_TO_STAGING", "Progress", "eta_seconds", "progress_of", "stream"]


class Progress(msgspec.Struct, frozen=True):
    task_id: str
    status: str
    bytes_read: int
    manifest_bytes: int
    rows_processed: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    rows_per_second: float | None
    eta_seconds: float | None
    error: dict[str, Any] | None
    # While the import waits in 'retrying' after a transient failure: when it runs again, and
    # how many attempts have failed so far (the errors are on GET /imports/{id}).
    retry_at: datetime | None = None
    attempts_failed: int = 0


def progress_of(record: imports_db.ImportRecord, now: datetime) -> Progress:
    rate: float | None = None
    if record.started_at is not None and record.rows_total:
        elapsed = max(((record.finished_at or now) - record.started_at).total_seconds(), 1e-6)
        rate = record.rows_total / elapsed
    eta = eta_seconds(record, now)
    return Progress(
        task_id=str(record.id),
        status=record.status,
        bytes_read=record.bytes_read,
        manifest_bytes=record.manifest_bytes,
        rows_processed=record.rows_total,
        rows_committed=record.rows_committed,
        rows_duplicate=record.rows_duplicate,
        rows_quarantined=record.rows_quarantined,
        rows_per_second=None if rate is None else round(rate, 1),
        eta_seconds=None if eta is None else round(eta, 1),
        error=record.error,
        retry_at=record.retry_at if record.status == "retrying" else None,
        attempts_failed=len(record.attempts),
    )


# With no history to learn from, the final step is taken to last this many times as long as
# staging took: 1.8 - 2.0 for 1M rows on the reference machine, where the wait is long enough
# for an ETA to matter (docs/PERFORMANCE.md; about 1.3 for 100,000 rows, whose staging is
# mostly start-up). The final step's cost per row hardly depends on the size (21 - 25 us a row
# for both), so the first finished import of 10,000 rows or more replaces the guess for good.
FINAL_STEP_TO_STAGING = 1.9


def eta_seconds(record: imports_db.ImportRecord, now: datetime) -> float | None:
    """Seconds until the import ends, its final transaction included.

    While the file is read: the bytes left at the rate read so far, plus the final step for the
    rows the whole file should hold. In the final step (one transaction, with no progress of its
    own to report): what is left of its estimate. An estimate is the import's learned cost per
    row (imports_db.learn_finalize_cost) or, with none, FINAL_STEP_TO_STAGING. None when there
    is nothing to estimate from (queued, retrying, nothing read yet) or the final step has outlasted its
    estimate: an honest "unknown" rather than a 0 that keeps being wrong.
    """
    if record.status in imports_db.TERMINAL_STATUSES:
        return 0.0
    if record.started_at is None or record.status in ("queued", "retrying"):
        return None
    if record.status == "finalizing":
        if record.finalizing_at is None:
            return None
        staging = (record.finalizing_at - record.started_at).total_seconds()
        left = _final_step_seconds(record, record.rows_total, staging) - (now - record.finalizing_at).total_seconds()
        return left if left > 0 else None
    if not record.bytes_read or not record.rows_total:
        return None
    read = min(record.bytes_read / record.manifest_bytes, 1.0) if record.manifest_bytes else 1.0
    staging = max((now - record.started_at).total_seconds(), 0.0) / read  # the whole file's
    return staging * (1.0 - read) + _final_step_seconds(record, record.rows_total / read, staging)


def _final_step_seconds(record: imports_db.ImportRecord, rows: float, staging_seconds: float) -> float:
    if record.finalize_seconds_per_row is not None:
        return rows * record.finalize_seconds_per_row
    return staging_seconds * FINAL_STEP_TO_STAGING


# Events are sent on every change and at least this often while the import runs.
EVENT_INTERVAL_SECONDS = 0.5


async def stream(pool: asyncpg.Pool[Any], record: imports_db.ImportRecord) -> AsyncIterator[tuple[str, Progress]]:
    """(event type, progress) until the import ends: 'progress' while it runs, then its final status."""
    current: imports_db.ImportRecord | None = record
    while current is not None:
        progress = progress_of(current, datetime.now(UTC))
        if current.status in imports_db.TERMINAL_STATUSES:
            yield current.status, progress
            return
        yield "progress", progress
        await asyncio.sleep(EVENT_INTERVAL_SECONDS)
        current = await imports_db.get_import(pool, current.id)
