"""One import, start to finish, as the worker runs it.

parse header -> validate + hash rows chunk by chunk -> COPY each chunk into staging
-> decide every row (ledger.db.import_decisions) -> one final transaction
(ledger_store.finalize_import). Every row ends committed, duplicate or quarantined; a
refused manifest ends ``failed`` with a coded error and leaves nothing behind.
"""

from __future__ import annotations

import time
import uuid
from contextlib import aclosing, nullcontext, suppress
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from opentelemetry import trace

from ledger.config import Settings
from ledger.core.policy import ManifestRefused, Policy
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.db import import_decisions as decisions
from ledger.db import import_statuses as statuses
from ledger.db import imports as imports_db
from ledger.db import locks, metrics_stages, staging
from ledger.db.checkpoints import CheckpointSigning
from ledger.db.ledger_store import (
    ImportAlreadyFinished,
    ImportCancelled,
    ImportContext,
    SideConnection,
    finalize_import,
)
from ledger.db.pool import Conn, name_connection
from ledger.ingest.errors import ManifestError
from ledger.ingest.formats import ReadOptions, open_manifest
from ledger.ingest.limits import manifest_rows_max
from ledger.ingest.staged_rows import STAGING_COLUMNS, StagedRow, stage_chunk
from ledger.ingest.staging_processes import StagedChunk, StageJob, staged_chunks
from ledger.jobs import spool_janitor
from ledger.jobs.retry import RetryPolicy, RetryRequested, is_transient
from ledger.jobs.stage_clock import StageClock
from ledger.logs import get_logger

__all__ = ["StagedRow", "run_import", "run_import_job", "stage_chunk"]

log = get_logger("ledger.pipeline")
# The stages' spans, children of the worker's span ``import`` (docs/tracing.md).
tracer = trace.get_tracer(__name__)

# An import in one of these when its job starts was running when its last run ended.
RUNNING_STATUSES = frozenset(statuses.RUNNING)
WORKER_LOST = {
    "code": "worker_lost",
    "message": "the worker running this import stopped without handing it back (killed, or lost the database)",
}


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
    retry: RetryPolicy | None = None,
    side: SideConnection | None = None,
    signing: CheckpointSigning | None = None,
) -> None:
    """Run one import on ``conn``; ``side``, a source of a second connection, lets the final
    step hash the outcomes beside the writes (ledger.db.ledger_store). A transient database
    failure propagates (the caller retries it: run_import_job); any other ends the import."""
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        log.warning("import_missing", task_id=str(import_id))
        return
    bound = log.bind(task_id=str(import_id), lab=record.lab)
    # Names this connection in pg_stat_activity for as long as the import runs (the pool's
    # reset on release restores the worker's name).
    await name_connection(conn, f"ledger-import:{import_id}")
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
        if record.status in RUNNING_STATUSES:
            # Its last run ended without finishing or handing it back: the worker was killed,
            # or lost the database mid-run. That is a failed attempt like a transient error.
            failed = await imports_db.record_attempt(conn, import_id, WORKER_LOST, retry_in_seconds=None)
            bound.warning("import_interrupted", stage="pipeline", attempts_failed=failed, was=record.status)
            if (retry or RetryPolicy.from_settings(settings)).exhausted(failed):
                await _fail(conn, import_id, gave_up(failed))
                return
        await _run_locked(conn, record, policies, settings, bound, side, signing)


async def _run_locked(
    conn: Conn,
    record: imports_db.ImportRecord,
    policies: PolicyRegistry,
    settings: Settings,
    bound: Any,
    side: SideConnection | None,
    signing: CheckpointSigning | None,
) -> None:
    import_id = record.id
    started = time.perf_counter()
    clock = StageClock()  # this run's stages, for GET /metrics (imports.stage_seconds)
    try:
        policy = _policy_for(policies, record)
        checkpoint = await _resume_point(conn, record, bound)
        await imports_db.set_status(conn, import_id, "parsing")
        # For the ETA: what the final step is likely to cost, from the imports before this one.
        await imports_db.learn_finalize_cost(conn, import_id)
        with tracer.start_as_current_span("parse_validate") as span:
            checkpoint = await _stage(conn, record, policy, settings, checkpoint, bound, clock)
            span.set_attribute("ledger.rows", checkpoint.rows)
        clock.switch(None)
        bound.info(
            "staged",
            stage="validating",
            rows=checkpoint.rows,
            rows_skipped=checkpoint.resumed_at[-1] if checkpoint.resumed_at else 0,
            seconds=round(time.perf_counter() - started, 3),
        )
        await imports_db.set_status(conn, import_id, "finalizing")
        t0 = time.perf_counter()
        with tracer.start_as_current_span("finalize"):
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
                    signing=signing,
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
        clock.add_finalize(result.timings)
        await metrics_stages.record_stages(conn, import_id, clock.seconds())
        trace.get_current_span().set_attributes(
            {
                "ledger.status": statuses.DONE,
                "ledger.rows_total": result.rows_total,
                "ledger.rows_committed": result.rows_committed,
                "ledger.rows_duplicate": result.rows_duplicate,
                "ledger.rows_quarantined": result.rows_quarantined,
                "ledger.batches": len(result.batches),
            }
        )
    except ImportAlreadyFinished:
        bound.info("import_already_finished", stage="finalizing")
    except ImportCancelled:
        bound.info("import_cancelled", stage="pipeline")
        trace.get_current_span().set_attribute("ledger.status", statuses.CANCELLED)
        await decisions.discard_working_rows(conn, import_id)
    except ImportFailed as exc:
        bound.info("import_refused", stage="parsing", code=exc.error["code"], reason=str(exc))
        _span_failed(exc, exc.error["code"])
        await _fail(conn, import_id, exc.error)
        await metrics_stages.record_stages(conn, import_id, clock.seconds())
    except Exception as exc:
        if is_transient(exc):
            raise
        # Never leave an import hanging: an unexpected fault still ends it, with a code.
        bound.exception("import_crashed", stage="pipeline")
        _span_failed(exc, "internal")
        await _fail(conn, import_id, {"code": "internal", "message": f"import failed: {type(exc).__name__}"})
        await metrics_stages.record_stages(conn, import_id, clock.seconds())


async def run_import_job(
    pool: asyncpg.Pool[Any],
    import_id: uuid.UUID,
    policies: PolicyRegistry,
    settings: Settings,
    retry: RetryPolicy,
    signing: CheckpointSigning | None,
) -> None:
    """The queue's job: run the import, and on a transient failure record the attempt and
    either ask the queue to run it again later (RetryRequested) or, with no attempt left, end
    it ``failed`` / ``transient_failure``. Raises nothing else: a job that raised would leave
    the queue while its import stayed unfinished."""
    try:
        async with pool.acquire() as conn:
            await run_import(conn, import_id, policies, settings, retry=retry, side=pool.acquire, signing=signing)
    except Exception as exc:
        if not is_transient(exc):
            _span_failed(exc, "internal")
            log.exception("import_job_crashed", stage="pipeline", task_id=str(import_id))
            with suppress(Exception):
                await imports_db.mark_failed(pool, import_id, {"code": "internal", "message": "import failed"})
        else:
            _span_failed(exc, "transient_failure", status=None)  # this run's; the import may be retried
            await _retry_later(pool, import_id, exc, retry)  # raises RetryRequested unless it gave up
    # Its upload goes once the import has ended (a retry or a hand-back re-reads it, and leaves
    # above by raising); spool_janitor checks the status again.
    await spool_janitor.after_import(pool, settings, import_id)


async def _retry_later(pool: asyncpg.Pool[Any], import_id: uuid.UUID, exc: Exception, retry: RetryPolicy) -> None:
    cause = _root_cause(exc)
    error = {"code": "transient_failure", "message": _describe(cause)}
    if sqlstate := getattr(cause, "sqlstate", None):
        error["sqlstate"] = str(sqlstate)
    bound = log.bind(task_id=str(import_id))
    try:
        async with pool.acquire() as conn:
            record = await imports_db.get_import(conn, import_id)
            failed = (len(record.attempts) if record is not None else 0) + 1
            if retry.exhausted(failed):
                await imports_db.record_attempt(conn, import_id, error, retry_in_seconds=None)
                await _fail(conn, import_id, gave_up(failed))
                bound.warning("import_gave_up", stage="retry", attempts_failed=failed, error=error["message"])
                return
            delay = retry.delay(failed)
            await imports_db.record_attempt(conn, import_id, error, retry_in_seconds=delay.total_seconds())
    except Exception:
        # The database is still away: the queue keeps the job (its retry is a database write
        # too; failing that, the job stays picked and is re-picked once its heartbeat is
        # stale), and the next run counts this attempt as interrupted.
        bound.warning("attempt_not_recorded", stage="retry", error=error["message"])
        delay = retry.delay(1)
    bound.warning(
        "import_retrying", stage="retry", delay_seconds=round(delay.total_seconds(), 3), error=error["message"]
    )
    raise RetryRequested(delay=delay, reason=error["message"]) from exc


def _span_failed(exc: BaseException, code: str, status: str | None = statuses.FAILED) -> None:
    """On the current span (the import's): the exception, and an error status with its code."""
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(trace.Status(trace.StatusCode.ERROR, code))
    span.set_attribute("ledger.error_code", code)
    if status is not None:
        span.set_attribute("ledger.status", status)


def gave_up(failed: int) -> dict[str, Any]:
    return {
        "code": "transient_failure",
        "message": f"the import failed transiently {failed} times in a row (the attempts are listed); "
        "resubmit it once the database is healthy",
        "attempts": failed,
    }


def _root_cause(exc: BaseException) -> BaseException:
    """The server's own error behind a driver's follow-on one ("connection is closed" after
    pg_terminate_backend says less than the AdminShutdownError that caused it)."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        if getattr(current, "sqlstate", None):
            return current
        current = current.__cause__ or current.__context__
    return exc


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


async def _resume_point(conn: Conn, record: imports_db.ImportRecord, bound: Any) -> imports_db.StagingCheckpoint:
    """Where staging goes on from: the last checkpoint, if the staged rows still match it.

    A chunk's COPY and its checkpoint commit together, so normally they agree; rows past the
    checkpoint are dropped anyway. Staging is UNLOGGED, so a database crash empties it: a
    count that disagrees with the checkpoint means starting over.
    """
    import_id = record.id
    if record.checkpoint is None:
        await decisions.discard_working_rows(conn, import_id)
        return imports_db.StagingCheckpoint()
    checkpoint = msgspec.convert(record.checkpoint, imports_db.StagingCheckpoint)
    staged = await staging.trim_to_checkpoint(conn, import_id, checkpoint.last_row)
    if staged != checkpoint.rows:
        bound.warning("checkpoint_lost", stage="parsing", checkpoint_rows=checkpoint.rows, staged_rows=staged)
        await decisions.discard_working_rows(conn, import_id)
        await imports_db.reset_checkpoint(conn, import_id)
        return imports_db.StagingCheckpoint()
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
    checkpoint: imports_db.StagingCheckpoint,
    bound: Any,
    clock: StageClock,
) -> imports_db.StagingCheckpoint:
    """Stage every record past the checkpoint; each chunk's COPY commits with its checkpoint."""
    if checkpoint.complete:
        return checkpoint
    clock.switch("parse_validate")  # reading and validating, until a chunk is ready to COPY
    header, fmt, warnings = _read_header(record, policy)
    await imports_db.record_header(conn, record.id, header=header, fmt=fmt, warnings=warnings)
    job = StageJob(
        import_id=str(record.id),
        lab=record.lab,
        path=record.spool_path,
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
        if await imports_db.status_of(conn, record.id) == statuses.CANCELLED:
            raise ImportCancelled(str(record.id))

    # Staging processes take turns across imports (locks.staging_slot); inline staging of a
    # small file does not wait for them.
    slot = locks.staging_slot(conn, give_up=give_up) if processes else nullcontext()
    try:
        # aclosing: on a cancel or a refusal the staging processes stop now, not at GC.
        async with slot, aclosing(staged_chunks(job, processes)) as chunks:
            async for chunk in chunks:
                clock.switch("stage")
                with tracer.start_as_current_span("stage", attributes={"ledger.rows": chunk.rows}):
                    await _commit_chunk(conn, record.id, checkpoint, chunk)
                clock.switch("parse_validate")
    except ManifestError as exc:
        raise ImportFailed(exc.code, exc.message) from exc
    clock.switch("stage")
    checkpoint.complete = True
    with tracer.start_as_current_span("stage", attributes={"ledger.complete": True}):
        await imports_db.save_checkpoint(conn, record.id, checkpoint)
        await staging.analyze(conn)
    return checkpoint


def _read_header(record: imports_db.ImportRecord, policy: Policy) -> tuple[list[str], dict[str, Any], list[Any]]:
    """The header, the detected format and the reader's warnings; a refused manifest fails
    here, before any staging process starts."""
    try:
        reader = open_manifest(Path(record.spool_path), msgspec.convert(record.options, ReadOptions))
        try:
            policy.bind_header(reader.header)
            return reader.header, reader.format, reader.warnings
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


async def _commit_chunk(
    conn: Conn, import_id: uuid.UUID, checkpoint: imports_db.StagingCheckpoint, chunk: StagedChunk
) -> None:
    """COPY one staged chunk and move the checkpoint past it, in one transaction."""
    checkpoint.rows += chunk.rows
    checkpoint.quarantined += chunk.quarantined
    checkpoint.bytes_read = chunk.bytes_read
    checkpoint.last_row = chunk.last_row
    if checkpoint.rows > manifest_rows_max:
        raise ImportFailed("too_many_rows", f"the manifest has more than {manifest_rows_max} rows")
    async with conn.transaction():
        await staging.copy_chunk(conn, chunk.payload, STAGING_COLUMNS)
        status = await imports_db.save_checkpoint(conn, import_id, checkpoint)
    if status == statuses.CANCELLED:
        raise ImportCancelled(str(import_id))
