"""One import, start to finish, as the worker runs it.

parse header -> validate + hash rows chunk by chunk -> COPY each chunk into staging
-> decide every row (ledger.db.decisions) -> one final transaction
(ledger_store.finalize_import). Every row ends committed, duplicate or quarantined; a
refused manifest ends ``failed`` with a coded error and leaves nothing behind.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing, nullcontext
from pathlib import Path
from typing import Any

import msgspec

from ledger.config import Settings
from ledger.core.policy import ManifestRefused, Policy
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.db import decisions, locks
from ledger.db import imports as imports_db
from ledger.db.ledger_store import (
    ImportAlreadyFinished,
    ImportCancelled,
    ImportContext,
    SideConnection,
    finalize_import,
)
from ledger.db.pool import Conn
from ledger.ingest.errors import ManifestError
from ledger.ingest.formats import ReadOptions, open_manifest
from ledger.ingest.limits import manifest_rows_max
from ledger.ingest.stagers import StageJob, staged_chunks
from ledger.ingest.staging import STAGING_COLUMNS, StagedRow, stage_chunk
from ledger.logs import get_logger

__all__ = ["StagedRow", "run_import", "stage_chunk"]

log = get_logger("ledger.pipeline")


class ImportFailed(Exception):
    """A refusal to record on the import: ``code`` is stable, the rest is for people."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message, **extra}


async def run_import(
    conn: Conn,
    import_id: uuid.UUID,
    policies: PolicyRegistry,
    settings: Settings,
    *,
    side: SideConnection | None = None,
) -> None:
    """Run one import on ``conn``; ``side``, a source of a second connection, lets the final
    step hash the outcomes beside the writes (ledger.db.ledger_store)."""
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        log.warning("import_missing", task_id=str(import_id))
        return
    bound = log.bind(task_id=str(import_id), lab=record.lab)
    # A job re-picked while its first run still lives (a late heartbeat) waits here for it,
    # then finds it finished: two runs of one import never stage or finalize side by side.
    # The lock is the connection's, so a killed worker releases it with its connection.
    async with locks.import_lock(conn, import_id):
        record = await imports_db.get_import(conn, import_id)
        if record is None or record.status in imports_db.TERMINAL_STATUSES:
            # E.g. cancelled while its worker was dead: what that worker staged goes too.
            await decisions.discard_working_rows(conn, import_id)
            bound.info("import_already_finished", stage="pipeline")
            return
        await _run_locked(conn, record, policies, settings, bound, side)


async def _run_locked(
    conn: Conn,
    record: imports_db.ImportRecord,
    policies: PolicyRegistry,
    settings: Settings,
    bound: Any,
    side: SideConnection | None,
) -> None:
    import_id = record.id
    started = time.perf_counter()
    try:
        policy = _policy_for(policies, record)
        checkpoint = await _resume_point(conn, record, bound)
        await imports_db.set_status(conn, import_id, "parsing")
        # For the ETA: what the final step is likely to cost, from the imports before this one.
        await imports_db.learn_finalize_cost(conn, import_id)
        checkpoint = await _stage(conn, record, policy, settings, checkpoint, bound)
        bound.info(
            "staged",
            stage="validating",
            rows=checkpoint.rows,
            rows_skipped=checkpoint.resumed_at[-1] if checkpoint.resumed_at else 0,
            seconds=round(time.perf_counter() - started, 3),
        )
        await imports_db.set_status(conn, import_id, "finalizing")
        t0 = time.perf_counter()
        result = await finalize_import(
            conn,
            ImportContext(
                import_id=import_id,
                lab=record.lab,
                policy_name=record.policy_name,
                policy_version=record.policy_version,
                policy_sha256=record.policy_sha256,
                manifest_sha256=record.manifest_sha256,
                dry_run=record.dry_run,
                staged_rows=checkpoint.rows,
            ),
            batch_rows_max=settings.batch_rows_max,
            side=side,
        )
        bound.info(
            "import_done",
            stage="finalizing",
            rows_total=result.rows_total,
            rows_committed=result.rows_committed,
            rows_duplicate=result.rows_duplicate,
            rows_quarantined=result.rows_quarantined,
            batches=len(result.batches),
            finalize_seconds=round(time.perf_counter() - t0, 3),
            finalize_steps=result.timings,
            seconds=round(time.perf_counter() - started, 3),
        )
    except ImportAlreadyFinished:
        bound.info("import_already_finished", stage="finalizing")
    except ImportCancelled:
        bound.info("import_cancelled", stage="pipeline")
        await decisions.discard_working_rows(conn, import_id)
    except ImportFailed as exc:
        bound.info("import_refused", stage="parsing", code=exc.error["code"], reason=str(exc))
        await _fail(conn, import_id, exc.error)
    except Exception as exc:
        # Never leave an import hanging: an unexpected fault still ends it, with a code.
        bound.exception("import_crashed", stage="pipeline")
        await _fail(conn, import_id, {"code": "internal", "message": f"import failed: {type(exc).__name__}"})


async def _resume_point(conn: Conn, record: imports_db.ImportRecord, bound: Any) -> imports_db.Checkpoint:
    """Where staging goes on from: the last checkpoint, if the staged rows still match it.

    A chunk's COPY and its checkpoint commit together, so normally they agree; rows past the
    checkpoint are dropped anyway. Staging is UNLOGGED, so a database crash empties it: a
    count that disagrees with the checkpoint means starting over.
    """
    import_id = record.id
    if record.checkpoint is None:
        await decisions.discard_working_rows(conn, import_id)
        return imports_db.Checkpoint()
    checkpoint = msgspec.convert(record.checkpoint, imports_db.Checkpoint)
    await conn.execute(
        "DELETE FROM import_staging WHERE import_id = $1 AND row_no > $2", import_id, checkpoint.last_row
    )
    staged = await conn.fetchval("SELECT count(*) FROM import_staging WHERE import_id = $1", import_id)
    if staged != checkpoint.rows:
        bound.warning("checkpoint_lost", stage="parsing", checkpoint_rows=checkpoint.rows, staged_rows=staged)
        await decisions.discard_working_rows(conn, import_id)
        await imports_db.reset_checkpoint(conn, import_id)
        return imports_db.Checkpoint()
    checkpoint.resumed_at.append(checkpoint.rows)
    await imports_db.save_checkpoint(conn, import_id, checkpoint)
    bound.info(
        "import_resumed",
        stage="parsing",
        rows_skipped=checkpoint.rows,
        last_row=checkpoint.last_row,
        complete=checkpoint.complete,
    )
    return checkpoint


async def _fail(conn: Conn, import_id: uuid.UUID, error: dict[str, Any]) -> None:
    await decisions.discard_working_rows(conn, import_id)
    await imports_db.mark_failed(conn, import_id, error)


def _policy_for(policies: PolicyRegistry, record: imports_db.ImportRecord) -> Policy:
    try:
        policy = policies.get(record.policy_name)
    except UnknownPolicy as exc:
        raise ImportFailed("policy_unavailable", str(exc)) from exc
    if policy.sha256 != record.policy_sha256:
        raise ImportFailed(
            "policy_changed",
            f"policy {record.policy_name!r} changed since the manifest was submitted "
            f"(submitted against sha256 {record.policy_sha256}, now {policy.sha256}); resubmit it",
        )
    return policy


async def _stage(
    conn: Conn,
    record: imports_db.ImportRecord,
    policy: Policy,
    settings: Settings,
    checkpoint: imports_db.Checkpoint,
    bound: Any,
) -> imports_db.Checkpoint:
    """Stage every record past the checkpoint; each chunk's COPY commits with its checkpoint."""
    if checkpoint.complete:
        return checkpoint
    path = Path(record.spool_path)
    try:
        # The header is read here too, so a refused manifest fails before any process starts.
        reader = open_manifest(path, msgspec.convert(record.options, ReadOptions))
        try:
            policy.bind_header(reader.header)
            header, fmt, warnings = reader.header, reader.format, reader.warnings
        finally:
            reader.close()
    except ManifestError as exc:
        raise ImportFailed(exc.code, exc.message) from exc
    except ManifestRefused as exc:
        extra = {
            name: list(getattr(exc, name))
            for name in ("unknown_columns", "missing_columns", "duplicate_columns")
            if getattr(exc, name, None)
        }
        raise ImportFailed(exc.code, str(exc), **extra) from exc
    await conn.execute(
        """
        UPDATE imports SET header = $2, format = $3, warnings = $4, status = 'validating'
        WHERE id = $1 AND status NOT IN ('done', 'failed', 'cancelled')
        """,
        record.id,
        header,
        fmt,
        warnings,
    )
    job = StageJob(
        import_id=str(record.id),
        lab=record.lab,
        path=str(path),
        options=record.options,
        policies_dir=str(settings.policies_dir.resolve()),
        policy_name=policy.name,
        policy_sha256=policy.sha256,
        after_row=checkpoint.last_row,
        chunk_rows=settings.import_chunk_rows,
    )
    # Spawning processes costs a fraction of a second: worth it only for a big file.
    big = record.manifest_bytes >= settings.import_parallel_bytes_min
    processes = settings.import_processes if big else 0

    async def give_up() -> None:
        if await conn.fetchval("SELECT status FROM imports WHERE id = $1", record.id) == "cancelled":
            raise ImportCancelled(str(record.id))

    # Staging processes take turns across imports (locks.staging_slot); inline staging of a
    # small file does not wait for them.
    slot = locks.staging_slot(conn, give_up=give_up) if processes else nullcontext()
    try:
        # aclosing: on a cancel or a refusal the staging processes stop now, not at GC.
        async with slot, aclosing(staged_chunks(job, processes)) as chunks:
            async for chunk in chunks:
                checkpoint.rows += chunk.rows
                checkpoint.quarantined += chunk.quarantined
                checkpoint.bytes_read = chunk.bytes_read
                checkpoint.last_row = chunk.last_row
                if checkpoint.rows > manifest_rows_max:
                    raise ImportFailed("too_many_rows", f"the manifest has more than {manifest_rows_max} rows")
                async with conn.transaction():
                    # Staging is rebuilt from the file after a database crash (the checkpoint
                    # check notices), so waiting for this commit's WAL flush buys nothing.
                    await conn.execute("SET LOCAL synchronous_commit = off")
                    await conn.copy_to_table(
                        "import_staging", source=_once(chunk.payload), columns=STAGING_COLUMNS, format="binary"
                    )
                    status = await imports_db.save_checkpoint(conn, record.id, checkpoint)
                if status == "cancelled":
                    raise ImportCancelled(str(record.id))
    except ManifestError as exc:
        raise ImportFailed(exc.code, exc.message) from exc
    checkpoint.complete = True
    await imports_db.save_checkpoint(conn, record.id, checkpoint)
    # Fresh statistics, or the planner takes a big import for a few rows and the final
    # transaction's joins go quadratic (autovacuum would analyse it only later).
    await conn.execute("ANALYZE import_staging")
    return checkpoint


async def _once(payload: bytes) -> AsyncIterator[bytes]:
    yield payload
