"""The spool janitor: what the upload spool may hold, and removing the rest.

An upload is needed until its import ends: a resumed or retried import reads its spooled file
again, so nothing here touches the file of an import that has not ended. Once it has ended the
file goes at once (``release``, from the import job) or, with ``LEDGER_SPOOL_RETENTION_SECONDS``,
that long after the import's end (``sweep``). A file no import row names (a refused upload whose
removal failed, one a crashed API process left half-written) goes once it is an hour old: an
upload still arriving is younger than that, or is written to still. Receipts are verified
against the submitter's own copy of the manifest, never against the spool.

A resumable (tus) upload may pause for longer than that: its file is kept while the upload lives.
Once it has expired (LEDGER_UPLOAD_EXPIRY_SECONDS after its last bytes), the sweep deletes its
row and, unless it completed (the file is then its import's), its file.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from ledger.config import Settings
from ledger.db import imports as imports_db
from ledger.db import tus_uploads as uploads_db
from ledger.logs import get_logger

__all__ = [
    "ORPHAN_SECONDS",
    "SWEEP_SECONDS",
    "after_import",
    "expire_uploads",
    "in_spool",
    "release",
    "run_janitor",
    "sweep",
]

log = get_logger("ledger.spool")

# A spool file that no import names is removed once it is this old.
ORPHAN_SECONDS = 3600
# How often the janitor looks.
SWEEP_SECONDS = 60.0


def in_spool(settings: Settings, path: str) -> Path | None:
    """``path`` if it lies in this service's spool (an import may name a file elsewhere, e.g.
    one a test or a benchmark made: never ours to remove)."""
    spool = settings.spool_dir.resolve()
    candidate = Path(path).resolve()
    return candidate if candidate.parent == spool else None


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("spool_remove_failed", stage="spool", path=str(path), error=type(exc).__name__)
        return False
    return True


async def release(pool: asyncpg.Pool[Any], settings: Settings, import_id: uuid.UUID) -> bool:
    """Remove the import's spooled upload if the import has ended and nothing keeps it
    (retention 0). True if a file was removed."""
    if settings.spool_retention_seconds > 0:
        return False
    record = await imports_db.get_import(pool, import_id)
    if record is None or record.status not in imports_db.TERMINAL_STATUSES:
        return False
    path = in_spool(settings, record.spool_path)
    if path is None or not _remove(path):
        return False
    log.info("spool_released", stage="spool", task_id=str(import_id), status=record.status)
    return True


async def sweep(pool: asyncpg.Pool[Any], settings: Settings, *, now: datetime | None = None) -> list[Path]:
    """Remove every spool file past its time, and every resumable upload past its expiry; the
    removed paths."""
    now = now or datetime.now(UTC)
    expired = await expire_uploads(pool, settings, now)
    spool = settings.spool_dir
    if not spool.is_dir():
        return expired
    files = [p.resolve() for p in spool.iterdir() if p.is_file()]
    if not files:
        return expired
    # Asked before the imports: an upload that completes in between is named by its import then.
    receiving = await uploads_db.receiving_paths(pool, [str(p) for p in files])
    rows = await pool.fetch(
        "SELECT spool_path, status, finished_at FROM imports WHERE spool_path = ANY($1::text[])",
        [str(p) for p in files],
    )
    named: dict[str, tuple[str, datetime | None]] = {r["spool_path"]: (r["status"], r["finished_at"]) for r in rows}
    keep_for = timedelta(seconds=settings.spool_retention_seconds)
    removed: list[Path] = expired
    for path in files:
        entry = named.get(str(path))
        if entry is None:
            if str(path) in receiving:
                continue  # a resumable upload that has not expired: its client may come back
            with contextlib.suppress(FileNotFoundError):
                age = now.timestamp() - path.stat().st_mtime
                if age >= ORPHAN_SECONDS and _remove(path):
                    removed.append(path)
            continue
        status, finished_at = entry
        if status not in imports_db.TERMINAL_STATUSES:
            continue  # still needed: a resumed or retried import reads it again
        ended = finished_at or datetime.fromtimestamp(path.stat().st_mtime, UTC)
        if now - ended >= keep_for and _remove(path):
            removed.append(path)
    if removed:
        log.info("spool_swept", stage="spool", removed=len(removed))
    return removed


async def expire_uploads(pool: asyncpg.Pool[Any], settings: Settings, now: datetime) -> list[Path]:
    """Delete the resumable uploads expired at ``now``: their rows, and the files of those that
    never completed. One that a request is writing to (it holds its lock) is left for the next
    sweep; so is one that request moved past ``now``. The removed paths."""
    removed: list[Path] = []
    deleted = 0
    for upload in await uploads_db.expired_uploads(pool, now):
        async with pool.acquire() as conn:
            if not await uploads_db.try_lock_upload(conn, upload.id):
                continue
            try:
                gone = await uploads_db.delete_expired(conn, upload.id, now)
            finally:
                await uploads_db.unlock_upload(conn, upload.id)
        if not gone:
            continue
        deleted += 1
        if upload.import_id is None and (path := in_spool(settings, upload.spool_path)) is not None and _remove(path):
            removed.append(path)
    if deleted:
        log.info("uploads_expired", stage="spool", uploads=deleted, files=len(removed))
    return removed


async def after_import(pool: asyncpg.Pool[Any], settings: Settings, import_id: uuid.UUID) -> None:
    """What the worker does with the spool when one of its import jobs ends: remove that
    import's upload if it has ended (never one still to be resumed or retried); the rest is
    the janitor's (run_janitor). Never raises: the spool is not worth a failed job."""
    try:
        await release(pool, settings, import_id)
    except Exception:
        log.warning("spool_cleanup_failed", stage="spool", task_id=str(import_id), exc_info=True)


async def run_janitor(pool: asyncpg.Pool[Any], settings: Settings, *, every: float = SWEEP_SECONDS) -> None:
    """Sweep the spool every ``every`` seconds until cancelled (a task of the worker's)."""
    while True:
        started = time.monotonic()
        try:
            await sweep(pool, settings)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            log.warning("spool_sweep_failed", stage="spool")
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
