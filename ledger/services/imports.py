"""Submitting manifests and reading back what became of them. The HTTP layer only translates."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.db import imports as imports_db
from ledger.db.job_queue import enqueue_import
from ledger.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, TooManyRequests
from ledger.ingest.errors import ManifestError, MultipartError, UploadTooLarge
from ledger.ingest.errors_csv import ErrorReportRow, iter_errors_csv
from ledger.ingest.spool import receive_multipart
from ledger.ingest.text_reader import normalise_encoding
from ledger.services.access import Principal, require_lab, require_role, submission_lab

__all__ = [
    "Accepted",
    "BatchView",
    "ImportStatus",
    "Progress",
    "RowsPage",
    "cancel",
    "error_report",
    "eta_seconds",
    "events",
    "get_status",
    "list_rows",
    "submit",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
_OUTCOMES = ("committed", "duplicate", "quarantined")
IDEMPOTENCY_KEY_MAX = 200


class Accepted(msgspec.Struct, frozen=True):
    task_id: str
    idempotency_key: str
    manifest_sha256: str
    status_url: str


class PolicyRef(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str


class BatchView(msgspec.Struct, frozen=True):
    seq: int
    kind: str
    batch_hash: str
    chain_hash: str
    records: int


class ImportStatus(msgspec.Struct, frozen=True):
    task_id: str
    status: str
    lab: str
    dry_run: bool
    policy: PolicyRef
    manifest_sha256: str
    manifest_bytes: int
    filename: str | None
    bytes_read: int
    rows_total: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    error: dict[str, Any] | None
    # What the reader detected (type, encoding, delimiter or sheet) and noticed without refusing.
    format: dict[str, Any] | None
    warnings: list[dict[str, Any]]
    batches: list[BatchView]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # The figures of the progress events (Progress), so that polling sees what streaming sees.
    rows_per_second: float | None = None
    eta_seconds: float | None = None
    # Whether GET /assets already shows what this import committed: the current-state
    # projection is applied just after the commit. None until the import is done, and for dry runs.
    assets_current: bool | None = None


class RowsPage(msgspec.Struct, frozen=True):
    items: list[imports_db.RowOutcome]
    next: str | None


def default_idempotency_key(
    manifest_sha256: str, policy_name: str, policy_version: str, dry_run: bool, options: dict[str, str] | None = None
) -> str:
    # A dry run must not answer for the real submission of the same file, nor the reverse;
    # nor may a file resent with another encoding or sheet get the first reading's answer.
    material = f"{manifest_sha256}\n{policy_name}\n{policy_version}\n{'dry-run' if dry_run else 'commit'}"
    if options:
        material += "\n" + "\n".join(f"{k}={v}" for k, v in sorted(options.items()))
    return hashlib.sha256(material.encode()).hexdigest()


async def submit(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    *,
    body: AsyncIterator[bytes],
    content_type: str,
    idempotency_key: str | None,
) -> tuple[bool, dict[str, Any]]:
    """Spool the upload, record the import and queue it. Returns (created, response body).

    Nothing about the rows is looked at here: the answer comes before any row is processed.
    """
    require_role(principal, ("lab_manager", "admin"))
    await _admit(pool, settings, principal)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(
            "invalid_idempotency_key", f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters"
        )
    settings.spool_dir.mkdir(parents=True, exist_ok=True)
    try:
        upload = await receive_multipart(body, content_type, settings.spool_dir, max_bytes=settings.upload_bytes_max)
    except UploadTooLarge as exc:
        raise PayloadTooLarge(
            "upload_too_large", f"the upload is larger than the limit of {settings.upload_bytes_max} bytes"
        ) from exc
    except MultipartError as exc:
        raise InvalidRequest(exc.code, exc.message) from exc
    spooled = upload.file
    if spooled is None:
        raise InvalidRequest("missing_file", "send the manifest as the multipart form field 'file'")
    keep = False
    try:
        fields = upload.fields
        try:
            policy = policies.get(fields.get("policy") or "lab-inventory")
        except UnknownPolicy as exc:
            raise InvalidRequest("unknown_policy", str(exc)) from exc
        lab = submission_lab(principal, fields.get("lab"))
        dry_run = _flag(fields.get("dry_run", ""), "dry_run")
        options = _read_options(fields)
        key = idempotency_key or default_idempotency_key(
            spooled.sha256_hex, policy.name, policy.version, dry_run, options
        )
        task_id = uuid.uuid4()
        accepted = Accepted(
            task_id=str(task_id),
            idempotency_key=key,
            manifest_sha256=spooled.sha256_hex,
            status_url=f"/imports/{task_id}",
        )
        body_dict = msgspec.to_builtins(accepted)
        record = imports_db.ImportRecord(
            id=task_id,
            idempotency_key=key,
            lab=lab,
            policy_name=policy.name,
            policy_version=policy.version,
            policy_sha256=policy.sha256,
            manifest_sha256=spooled.sha256_hex,
            manifest_bytes=spooled.size,
            filename=upload.filename,
            spool_path=str(Path(spooled.path).resolve()),
            dry_run=dry_run,
            status="queued",
            rows_total=0,
            rows_committed=0,
            rows_duplicate=0,
            rows_quarantined=0,
            bytes_read=0,
            error=None,
            accepted_body=body_dict,
            options=options,
            created_at=datetime.now(UTC),
            started_at=None,
            finished_at=None,
        )
        async with pool.acquire() as conn, conn.transaction():
            if await imports_db.insert_import(conn, record, principal.token_id):
                await enqueue_import(conn, task_id)
                keep = True
                return True, body_dict
            existing = await imports_db.find_by_key(conn, lab, key)
        assert existing is not None
        if existing.manifest_sha256 != spooled.sha256_hex:
            raise Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different file",
                task_id=str(existing.id),
            )
        return False, existing.accepted_body
    finally:
        if not keep:
            with contextlib.suppress(FileNotFoundError):
                Path(spooled.path).unlink()


async def _admit(pool: asyncpg.Pool[Any], settings: Settings, principal: Principal) -> None:
    """Backpressure, checked before the body is read so a refused upload costs nothing."""
    row = await pool.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'queued' AND lab = ANY($1::text[])) AS queued_lab
        FROM imports WHERE status IN ('queued', 'parsing', 'validating', 'loading', 'finalizing')
        """,
        list(principal.labs),
    )
    assert row is not None
    if row["queued"] >= settings.imports_queued_max:
        raise TooManyRequests(
            f"{row['queued']} imports are already waiting (the limit is {settings.imports_queued_max}); "
            "try again shortly",
            retry_after=10,
        )
    if principal.labs and row["queued_lab"] >= settings.imports_queued_per_lab_max:
        raise TooManyRequests(
            f"your lab already has {row['queued_lab']} imports waiting (the limit per lab is "
            f"{settings.imports_queued_per_lab_max}); wait for them to start",
            retry_after=10,
        )


def _read_options(fields: dict[str, str]) -> dict[str, str]:
    """How to read the file, as the submitter said (only what was given is stored)."""
    options: dict[str, str] = {}
    encoding = fields.get("encoding", "").strip()
    if encoding:
        try:
            normalise_encoding(encoding)
        except ManifestError as exc:
            message = f"{exc.message}; leave 'encoding' out to have it detected"
            raise InvalidRequest("invalid_encoding", message) from exc
        options["encoding"] = encoding
    if fields.get("sheet", "").strip():
        options["sheet"] = fields["sheet"]
    return options


def _flag(raw: str, name: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidRequest("invalid_field", f"{name} must be true or false, got {raw!r}")


async def _readable_import(
    conn: asyncpg.Connection[Any] | asyncpg.Pool[Any], principal: Principal, task_id: str
) -> imports_db.ImportRecord:
    try:
        import_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound("not_found", f"no import {task_id!r}") from None
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        raise NotFound("not_found", f"no import {task_id!r}")
    require_lab(principal, record.lab)
    return record


async def get_status(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> ImportStatus:
    record = await _readable_import(pool, principal, task_id)
    batches = await pool.fetch(
        "SELECT seq, kind, batch_hash, chain_hash, records FROM ledger_batches WHERE import_id = $1 ORDER BY seq",
        record.id,
    )
    assets_current: bool | None = None
    if record.status == "done" and not record.dry_run and batches:
        applied = await pool.fetchval("SELECT applied_seq FROM assets_projection WHERE id = 1")
        assets_current = applied is not None and applied >= batches[-1]["seq"]
    progress = progress_of(record, datetime.now(UTC))
    return ImportStatus(
        task_id=str(record.id),
        status=record.status,
        lab=record.lab,
        dry_run=record.dry_run,
        policy=PolicyRef(record.policy_name, record.policy_version, record.policy_sha256),
        manifest_sha256=record.manifest_sha256,
        manifest_bytes=record.manifest_bytes,
        filename=record.filename,
        bytes_read=record.bytes_read,
        rows_total=record.rows_total,
        rows_committed=record.rows_committed,
        rows_duplicate=record.rows_duplicate,
        rows_quarantined=record.rows_quarantined,
        error=record.error,
        format=record.format,
        warnings=record.warnings,
        batches=[
            BatchView(
                seq=b["seq"],
                kind=b["kind"],
                batch_hash=bytes(b["batch_hash"]).hex(),
                chain_hash=bytes(b["chain_hash"]).hex(),
                records=b["records"],
            )
            for b in batches
        ],
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        rows_per_second=progress.rows_per_second,
        eta_seconds=progress.eta_seconds,
        assets_current=assets_current,
    )


async def list_rows(
    pool: asyncpg.Pool[Any],
    principal: Principal,
    task_id: str,
    *,
    outcome: str | None,
    limit: int,
    cursor: str | None,
) -> RowsPage:
    record = await _readable_import(pool, principal, task_id)
    if outcome is not None and outcome not in _OUTCOMES:
        raise InvalidRequest("invalid_outcome", f"outcome must be one of {', '.join(_OUTCOMES)}")
    if not 1 <= limit <= 1000:
        raise InvalidRequest("invalid_limit", "limit must be between 1 and 1000")
    after = 0
    if cursor:
        try:
            after = int(cursor)
        except ValueError:
            raise InvalidRequest("invalid_cursor", "cursor is not one this service issued") from None
    items = await imports_db.list_rows(pool, record.id, outcome=outcome, after=after, limit=limit)
    return RowsPage(items=items, next=str(items[-1].row) if len(items) == limit else None)


async def error_report(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> tuple[str, AsyncIterator[str]]:
    """A filename and the CSV text (in chunks) of every broken rule of every quarantined row."""
    record = await _readable_import(pool, principal, task_id)
    header: list[str] = list(await pool.fetchval("SELECT header FROM imports WHERE id = $1", record.id) or [])

    async def rows() -> AsyncIterator[ErrorReportRow]:
        async with pool.acquire() as conn:
            async for row_no, errors, cells in imports_db.iter_quarantined(conn, record.id):
                yield ErrorReportRow(row=row_no, errors=errors, cells=cells)

    return f"import-{record.id}-errors.csv", iter_errors_csv(header, rows())


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
    is nothing to estimate from (queued, nothing read yet) or the final step has outlasted its
    estimate: an honest "unknown" rather than a 0 that keeps being wrong.
    """
    if record.status in imports_db.TERMINAL_STATUSES:
        return 0.0
    if record.started_at is None or record.status == "queued":
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


async def events(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> AsyncIterator[tuple[str, Progress]]:
    """(event type, progress) until the import ends: 'progress' while it runs, then its final status."""
    import asyncio

    record = await _readable_import(pool, principal, task_id)

    async def stream() -> AsyncIterator[tuple[str, Progress]]:
        current: imports_db.ImportRecord | None = record
        while current is not None:
            now = datetime.now(UTC)
            progress = progress_of(current, now)
            if current.status in imports_db.TERMINAL_STATUSES:
                yield current.status, progress
                return
            yield "progress", progress
            await asyncio.sleep(EVENT_INTERVAL_SECONDS)
            current = await imports_db.get_import(pool, current.id)

    return stream()


async def cancel(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> ImportStatus:
    """Cancel a queued or running import: nothing of it is committed. A finished one is a 409."""
    record = await _readable_import(pool, principal, task_id)
    require_role(principal, ("lab_manager", "admin"))
    # Finalisation holds this row's lock for its whole transaction, so a cancel either lands
    # before it (the worker then rolls back) or sees 'done'.
    cancelled = await pool.fetchval(
        """
        UPDATE imports SET status = 'cancelled', finished_at = now(),
               error = jsonb_build_object('code', 'cancelled', 'message', 'cancelled on request')
        WHERE id = $1 AND status NOT IN ('done', 'failed', 'cancelled')
        RETURNING true
        """,
        record.id,
    )
    if not cancelled:
        current = await get_status(pool, principal, task_id)
        raise Conflict(
            "already_finished", f"the import already ended with status {current.status!r}", status=current.status
        )
    return await get_status(pool, principal, task_id)
