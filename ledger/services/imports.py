"""Submitting manifests and reading back what became of them. The HTTP layer only translates."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from ledger import audit_log
from ledger.config import Settings
from ledger.core.policy import Policy
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.core.policy.rules import echo
from ledger.core.review import PolicyRef
from ledger.db import connectors as connectors_db
from ledger.db import import_statuses as statuses
from ledger.db import imports as imports_db
from ledger.db import locks, metrics_stages
from ledger.db.cursors import decode_row_cursor
from ledger.db.job_queue import enqueue_import
from ledger.db.pool import Conn
from ledger.errors import (
    Conflict,
    InsufficientStorage,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
)
from ledger.ingest.errors import ManifestError, MultipartError, UploadTooLarge
from ledger.ingest.errors_csv import ErrorReportRow, iter_errors_csv
from ledger.ingest.spool import MultipartUpload, SpoolResult, receive_multipart
from ledger.ingest.text_reader import normalise_encoding
from ledger.services import progress
from ledger.services.access import Principal, readable_import, sees_lab, submission_lab
from ledger.services.labs import require_known
from ledger.services.limits import IDEMPOTENCY_KEY_MAX, IMPORT_ROWS_PAGE_MAX
from ledger.services.progress import Progress, progress_of
from ledger.telemetry import tracing

__all__ = [
    "Accepted",
    "BatchView",
    "ImportStatus",
    "RowsPage",
    "Submission",
    "admit",
    "cancel",
    "check_idempotency_key",
    "check_submission",
    "error_report",
    "events",
    "get_status",
    "list_rows",
    "prepare_spool",
    "record_import",
    "submit",
]

SPOOL_DIR_MODE = 0o700
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}
_OUTCOMES = ("committed", "duplicate", "quarantined")


class Accepted(msgspec.Struct, frozen=True):
    task_id: str
    idempotency_key: str
    manifest_sha256: str
    status_url: str


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
    # Each attempt that failed transiently ({attempt, error, failed_at, retry_at}), and while the
    # import waits in 'retrying', when it runs again (ledger.jobs.retry).
    attempts: list[dict[str, Any]] = []
    retry_at: datetime | None = None


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
    await admit(pool, settings, principal)
    check_idempotency_key(idempotency_key)
    started = time.perf_counter()
    upload = await _spool(body, content_type, settings)
    upload_seconds = time.perf_counter() - started  # the body's time: GET /metrics, stage "upload"
    spooled = upload.file
    if spooled is None:
        raise InvalidRequest("missing_file", "send the manifest as the multipart form field 'file'")
    try:
        created, accepted = await record_import(
            pool,
            settings,
            policies,
            principal,
            spooled=spooled,
            filename=upload.filename,
            fields=upload.fields,
            idempotency_key=idempotency_key,
        )
    except BaseException:
        _discard(spooled)
        raise
    if created:
        await metrics_stages.record_stages(pool, uuid.UUID(accepted["task_id"]), {"upload": upload_seconds})
    return created, accepted


async def record_import(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    *,
    spooled: SpoolResult,
    filename: str | None,
    fields: Mapping[str, str],
    idempotency_key: str | None,
    also: Callable[[Conn, uuid.UUID], Awaitable[None]] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Record the import of a manifest that is whole in the spool, and queue it: how every
    submission ends, a POST /imports and a completed resumable upload (ledger.services.tus)
    alike. Returns (created, response body). ``fields`` are the submission's own (policy, lab,
    dry_run, encoding, sheet); ``also`` runs in the same transaction with the id of the import
    that answers, created or found.

    Created, the file is the import's; the same submission answered again, it is removed; on an
    error it is left to the caller (a resumable upload keeps it to be completed again).
    """
    record = _new_record(policies, principal, spooled, filename, fields, idempotency_key)
    # The request's trace, which the worker that runs the import continues (ledger.telemetry).
    record = msgspec.structs.replace(record, trace_context=tracing.traceparent())
    # The audit line is written once the transaction has committed (ledger.audit_log).
    async with pool.acquire() as conn, audit_log.deferred(), conn.transaction():
        # Counted again now that the body is in, and with the insert under one lock: the
        # check before the body only spares a refused upload the transfer.
        await locks.hold_admission(conn)
        await require_known(conn, [record.lab])
        sync_id = await _connector_sync(conn, principal, fields, spooled, record.lab)
        existing = await imports_db.find_by_key(conn, record.lab, record.idempotency_key)
        if existing is None:
            _check_room(settings, *await imports_db.waiting_counts(conn, [record.lab]), labs=[record.lab])
            if await imports_db.insert_import(conn, record, principal.token_id):
                if sync_id is not None:
                    await connectors_db.attach_import(conn, sync_id, record.id, created=True)
                await enqueue_import(conn, record.id)
                if also is not None:
                    await also(conn, record.id)
                audit_log.after_commit(_audit(audit_log.IMPORT_SUBMITTED, principal, record))
                return True, record.accepted_body
            existing = await imports_db.find_by_key(conn, record.lab, record.idempotency_key)
        assert existing is not None
        if existing.manifest_sha256 != spooled.sha256_hex:
            raise Conflict(
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different file",
                task_id=str(existing.id),
            )
        if sync_id is not None:
            # The same manifest again (a re-run of the same window): the sync names the import
            # that already answers for it, whose receipt keeps the first sync's pages.
            await connectors_db.attach_import(conn, sync_id, existing.id, created=False)
        if also is not None:
            await also(conn, existing.id)
    _discard(spooled)
    return False, existing.accepted_body


async def _connector_sync(
    conn: Conn, principal: Principal, fields: Mapping[str, str], spooled: SpoolResult, lab: str
) -> uuid.UUID | None:
    """The sync (ledger.services.connectors) an upload is the manifest of, from its form field
    ``connector_sync``: the caller's, for the same lab, and exactly the file the sync recorded."""
    text = fields.get("connector_sync")
    if not text:
        return None
    missing = NotFound("not_found", f"no connector sync {echo(text)}", field="connector_sync")
    try:
        sync_id = uuid.UUID(text)
    except ValueError:
        raise missing from None
    row = await connectors_db.get_sync(conn, sync_id)
    if row is None or not sees_lab(principal, row.lab):
        raise missing
    if row.lab != lab:
        raise InvalidRequest("lab_mismatch", f"the sync is lab {echo(row.lab)}'s; submit it for that lab", field="lab")
    if row.manifest_sha256 != spooled.sha256_hex:
        raise Conflict(
            "sync_manifest_mismatch", "this file is not the manifest the sync recorded (its SHA-256 differs)"
        )
    return sync_id


def _discard(spooled: SpoolResult) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(spooled.path).unlink()


def check_idempotency_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidRequest(
            "invalid_idempotency_key", f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters"
        )


async def _spool(body: AsyncIterator[bytes], content_type: str, settings: Settings) -> MultipartUpload:
    """Receive the multipart body into the spool, translating what can go wrong."""
    try:
        prepare_spool(settings)
        return await receive_multipart(body, content_type, settings.spool_dir, max_bytes=settings.upload_bytes_max)
    except UploadTooLarge as exc:
        raise PayloadTooLarge(
            "upload_too_large", f"the upload is larger than the limit of {settings.upload_bytes_max} bytes"
        ) from exc
    except MultipartError as exc:
        if exc.field is not None:
            raise InvalidRequest(exc.code, exc.message, field=exc.field) from exc
        raise InvalidRequest(exc.code, exc.message) from exc
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(
                "spool_full", "the server has no room left to store the upload; try again later or tell its operator"
            ) from exc
        raise


def prepare_spool(settings: Settings) -> Path:
    """The spool, readable by the service's user alone (uploaded manifests are lab data)."""
    settings.spool_dir.mkdir(mode=SPOOL_DIR_MODE, parents=True, exist_ok=True)
    if settings.spool_dir.stat().st_mode & 0o777 != SPOOL_DIR_MODE:
        settings.spool_dir.chmod(SPOOL_DIR_MODE)
    return settings.spool_dir


class Submission(msgspec.Struct, frozen=True):
    """What a submission's fields ask for, checked: refused here, it is refused before any byte
    of its file is stored (a resumable upload is checked so when it is created)."""

    policy: Policy
    lab: str
    dry_run: bool
    options: dict[str, str]


def check_submission(policies: PolicyRegistry, principal: Principal, fields: Mapping[str, str]) -> Submission:
    """The policy, lab, dry_run and reading options the fields name (the lab's registration is
    checked against the database, by require_known)."""
    try:
        policy = policies.get(fields.get("policy") or "lab-inventory")
    except UnknownPolicy as exc:
        raise InvalidRequest("unknown_policy", str(exc)) from exc
    lab = submission_lab(principal, fields.get("lab"))
    dry_run = _flag(fields.get("dry_run", ""), "dry_run")
    return Submission(policy=policy, lab=lab, dry_run=dry_run, options=_read_options(fields))


def _new_record(
    policies: PolicyRegistry,
    principal: Principal,
    spooled: SpoolResult,
    filename: str | None,
    fields: Mapping[str, str],
    idempotency_key: str | None,
) -> imports_db.ImportRecord:
    """The import the submission's fields and the spooled file describe, not yet inserted."""
    submission = check_submission(policies, principal, fields)
    policy, lab, dry_run, options = submission.policy, submission.lab, submission.dry_run, submission.options
    key = idempotency_key or default_idempotency_key(spooled.sha256_hex, policy.name, policy.version, dry_run, options)
    task_id = uuid.uuid4()
    accepted = Accepted(
        task_id=str(task_id), idempotency_key=key, manifest_sha256=spooled.sha256_hex, status_url=f"/imports/{task_id}"
    )
    return imports_db.ImportRecord(
        id=task_id,
        idempotency_key=key,
        lab=lab,
        policy_name=policy.name,
        policy_version=policy.version,
        policy_sha256=policy.sha256,
        manifest_sha256=spooled.sha256_hex,
        manifest_bytes=spooled.size,
        filename=filename,
        spool_path=str(Path(spooled.path).resolve()),
        dry_run=dry_run,
        status=statuses.QUEUED,
        rows_total=0,
        rows_committed=0,
        rows_duplicate=0,
        rows_quarantined=0,
        bytes_read=0,
        error=None,
        accepted_body=msgspec.to_builtins(accepted),
        options=options,
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
    )


async def admit(pool: asyncpg.Pool[Any], settings: Settings, principal: Principal) -> None:
    """Backpressure, checked before the body is read so a refused upload costs nothing (and
    again, under the admission lock, when the import is inserted)."""
    labs = list(principal.labs)
    _check_room(settings, *await imports_db.waiting_counts(pool, labs), labs=labs)


def _check_room(settings: Settings, queued: int, queued_lab: int, *, labs: list[str]) -> None:
    if queued >= settings.imports_queued_max:
        raise TooManyRequests(
            f"{queued} imports are already waiting (the limit is {settings.imports_queued_max}); try again shortly",
            retry_after=10,
        )
    if labs and queued_lab >= settings.imports_queued_per_lab_max:
        raise TooManyRequests(
            f"your lab already has {queued_lab} imports waiting (the limit per lab is "
            f"{settings.imports_queued_per_lab_max}); wait for them to start",
            retry_after=10,
        )


def _read_options(fields: Mapping[str, str]) -> dict[str, str]:
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


async def get_status(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> ImportStatus:
    record = await readable_import(pool, principal, task_id)
    batches = await imports_db.batches_of(pool, record.id)
    assets_current: bool | None = None
    if record.status == "done" and not record.dry_run and batches:
        applied = await imports_db.projection_applied_seq(pool)
        assets_current = applied is not None and applied >= batches[-1]["seq"]
    now_progress = progress_of(record, datetime.now(UTC))
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
        rows_per_second=now_progress.rows_per_second,
        eta_seconds=now_progress.eta_seconds,
        assets_current=assets_current,
        attempts=record.attempts,
        retry_at=record.retry_at if record.status == "retrying" else None,
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
    record = await readable_import(pool, principal, task_id)
    if outcome is not None and outcome not in _OUTCOMES:
        raise InvalidRequest("invalid_outcome", f"outcome must be one of {', '.join(_OUTCOMES)}")
    if not 1 <= limit <= IMPORT_ROWS_PAGE_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {IMPORT_ROWS_PAGE_MAX}")
    after = decode_row_cursor(cursor) if cursor else 0
    items = await imports_db.list_rows(pool, record.id, outcome=outcome, after=after, limit=limit)
    return RowsPage(items=items, next=str(items[-1].row) if len(items) == limit else None)


async def error_report(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> tuple[str, AsyncIterator[str]]:
    """A filename and the CSV text (in chunks) of every broken rule of every quarantined row."""
    record = await readable_import(pool, principal, task_id)
    header: list[str] = list(record.header or [])

    async def rows() -> AsyncIterator[ErrorReportRow]:
        async with pool.acquire() as conn:
            async for row_no, errors, cells in imports_db.iter_quarantined(conn, record.id):
                yield ErrorReportRow(row=row_no, errors=errors, cells=cells)

    return f"import-{record.id}-errors.csv", iter_errors_csv(header, rows())


async def events(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> AsyncIterator[tuple[str, Progress]]:
    """(event type, progress) until the import ends (ledger.services.progress.stream)."""
    record = await readable_import(pool, principal, task_id)
    return progress.stream(pool, record)


async def cancel(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> ImportStatus:
    """Cancel a queued or running import: nothing of it is committed. A finished one is a 409."""
    record = await readable_import(pool, principal, task_id)
    # Finalisation holds this row's lock for its whole transaction, so a cancel either lands
    # before it (the worker then rolls back) or sees 'done'.
    if not await imports_db.cancel(pool, record.id):
        current = await get_status(pool, principal, task_id)
        raise Conflict(
            "already_finished", f"the import already ended with status {current.status!r}", status=current.status
        )
    audit_log.after_commit(_audit(audit_log.IMPORT_CANCELLED, principal, record))
    return await get_status(pool, principal, task_id)


def _audit(action: str, principal: Principal, record: imports_db.ImportRecord) -> audit_log.AuditEvent:
    fields = audit_log.LedgerFields(task_id=str(record.id), lab=record.lab, dry_run=record.dry_run)
    return audit_log.event(action, actor=principal, ledger=fields)
