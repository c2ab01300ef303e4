"""One import, start to finish, as the worker runs it.

parse header -> validate + hash rows chunk by chunk -> COPY each chunk into staging
-> one final transaction (ledger_store.finalize_import). Every row ends committed,
duplicate or quarantined; a refused manifest ends ``failed`` with a coded error and
leaves nothing behind.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from ledger.config import Settings
from ledger.core.hashing import leaf_hash
from ledger.core.policy import ManifestRefused, Policy
from ledger.core.records import asset_record
from ledger.db import imports as imports_db
from ledger.db.ledger_store import ImportCancelled, ImportContext, finalize_import
from ledger.db.pool import Conn
from ledger.ingest.csv_reader import iter_chunks
from ledger.ingest.errors import ManifestError
from ledger.ingest.formats import ReadOptions, open_manifest
from ledger.ingest.limits import chunk_rows, manifest_rows_max, quarantined_cell_chars_max
from ledger.logs import get_logger
from ledger.services.policies import PolicyRegistry, UnknownPolicy

__all__ = ["StagedRow", "run_import", "stage_chunk"]

log = get_logger("ledger.pipeline")

_STAGING_COLUMNS = (
    "import_id",
    "row_no",
    "asset_id",
    "grant_code",
    "record",
    "leaf_hash",
    "errors",
    "cells",
)

StagedRow = tuple[
    uuid.UUID, int, str | None, str | None, bytes | None, bytes | None, list[dict[str, str]] | None, list[str]
]


class ImportFailed(Exception):
    """A refusal to record on the import: ``code`` is stable, the rest is for people."""

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": code, "message": message, **extra}


async def run_import(conn: Conn, import_id: uuid.UUID, policies: PolicyRegistry, settings: Settings) -> None:
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        log.warning("import_missing", task_id=str(import_id))
        return
    if record.status in imports_db.TERMINAL_STATUSES:
        return
    started = time.perf_counter()
    bound = log.bind(task_id=str(import_id), lab=record.lab)
    try:
        policy = _policy_for(policies, record)
        # A re-picked job starts again from the spooled file; what an earlier attempt
        # staged is discarded first so no row is staged twice.
        await conn.execute("DELETE FROM import_staging WHERE import_id = $1", import_id)
        await imports_db.set_status(conn, import_id, "parsing")
        rows = await _stage(conn, record, policy, Path(record.spool_path), bound)
        bound.info("staged", stage="validating", rows=rows, seconds=round(time.perf_counter() - started, 3))
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
            ),
            batch_rows_max=settings.batch_rows_max,
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
    except ImportCancelled:
        bound.info("import_cancelled", stage="pipeline")
        await conn.execute("DELETE FROM import_staging WHERE import_id = $1", import_id)
    except ImportFailed as exc:
        bound.info("import_refused", stage="parsing", code=exc.error["code"], reason=str(exc))
        await _fail(conn, import_id, exc.error)
    except Exception as exc:
        # Never leave an import hanging: an unexpected fault still ends it, with a code.
        bound.exception("import_crashed", stage="pipeline")
        await _fail(conn, import_id, {"code": "internal", "message": f"import failed: {type(exc).__name__}"})


async def _fail(conn: Conn, import_id: uuid.UUID, error: dict[str, Any]) -> None:
    await conn.execute("DELETE FROM import_staging WHERE import_id = $1", import_id)
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
    path: Path,
    bound: Any,
) -> int:
    try:
        reader = open_manifest(path, msgspec.convert(record.options, ReadOptions))
        binding = policy.bind_header(reader.header)
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
        "UPDATE imports SET header = $2, format = $3, warnings = $4, status = 'validating' WHERE id = $1",
        record.id,
        reader.header,
        reader.format,
        reader.warnings,
    )
    rows = quarantined = 0
    try:
        for chunk in iter_chunks(reader, chunk_rows):
            staged = stage_chunk(record.id, record.lab, policy, binding, chunk)
            rows += len(staged)
            quarantined += sum(1 for row in staged if row[6] is not None)
            if rows > manifest_rows_max:
                raise ImportFailed("too_many_rows", f"the manifest has more than {manifest_rows_max} rows")
            await conn.copy_records_to_table("import_staging", records=staged, columns=_STAGING_COLUMNS)
            status = await imports_db.set_progress(
                conn, record.id, rows=rows, quarantined=quarantined, bytes_read=reader.bytes_read
            )
            if status == "cancelled":
                raise ImportCancelled(str(record.id))
    except ManifestError as exc:
        raise ImportFailed(exc.code, exc.message) from exc
    finally:
        reader.close()
    return rows


def stage_chunk(import_id: uuid.UUID, lab: str, policy: Policy, binding: Any, chunk: list[Any]) -> list[StagedRow]:
    """Validate, normalise and hash one chunk of records: pure CPU, no I/O."""
    out: list[StagedRow] = []
    name = policy.name
    validate = binding.validate
    for rec in chunk:
        if rec.error is not None:
            out.append(
                (
                    import_id,
                    rec.row,
                    None,
                    None,
                    None,
                    None,
                    [{"field": "row", "rule": rec.error.rule, "message": rec.error.message}],
                    rec.cells,
                )
            )
            continue
        result = validate(rec.cells)
        if result.errors:
            out.append(
                (
                    import_id,
                    rec.row,
                    None,
                    None,
                    None,
                    None,
                    [{"field": v.field, "rule": v.rule, "message": v.message} for v in result.errors],
                    [c[:quarantined_cell_chars_max] for c in rec.cells],
                )
            )
            continue
        assert result.data is not None and result.key is not None
        body = asset_record(policy=name, lab=lab, data=result.data)
        out.append(
            (
                import_id,
                rec.row,
                result.key[0],
                result.key[1],
                body,
                leaf_hash(body),
                None,
                rec.cells,
            )
        )
    return out
