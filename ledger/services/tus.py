"""Resumable uploads: the tus 1.0 protocol (https://tus.io/protocols/resumable-upload), core and
the creation, creation-with-upload, termination, checksum (sha256) and expiration extensions.

An upload is created (POST) with its length and the submission's fields in Upload-Metadata
(``filename``, ``policy``, ``lab``, ``dry_run``, ``idempotency_key``; ``encoding`` and ``sheet``
as POST /imports takes them), checked then as a submission is, so that what can be refused is
refused before any byte is stored. Its bytes arrive in PATCHes at the offset the server holds;
the last one records the import exactly as POST /imports does (ledger.services.imports.
record_import: the same spool, SHA-256 and idempotency), and its answer, like every later HEAD,
names the import in ``Ledger-Import``.

The offset lives in PostgreSQL (ledger.db.tus_uploads), and a PATCH holds the upload's lock on a
connection of its own while it writes, so any API process may serve the next PATCH and two never
interleave. Bytes are written to the spool file and synced before the offset moves past them; a
PATCH cut short keeps what arrived (unless it carried a checksum, which what arrived cannot
match). An upload is its creator's: another token's request answers 404, as an unknown id does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import hashlib
import os
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import asyncpg
import msgspec

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.core.policy.rules import echo
from ledger.db import metrics_stages
from ledger.db import tus_uploads as uploads_db
from ledger.db.pool import Conn, Executor, connect
from ledger.db.tus_uploads import UploadRow
from ledger.errors import Conflict, InsufficientStorage, InvalidRequest, NotFound, PayloadTooLarge, ServiceError
from ledger.ingest.spool import SPOOL_FILE_MODE, SpoolResult
from ledger.services import imports
from ledger.services.access import Principal, sees_lab
from ledger.services.labs import require_known

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "OFFSET_STREAM",
    "TUS_VERSION",
    "BadHeader",
    "ChecksumMismatch",
    "OffsetMismatch",
    "TusError",
    "TusHeaders",
    "UnsupportedTusVersion",
    "UploadBusy",
    "UploadGone",
    "UploadState",
    "Uploads",
    "capabilities",
    "http_date",
    "require_version",
]

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "checksum", "expiration")
CHECKSUM_ALGORITHMS = ("sha256",)
OFFSET_STREAM = "application/offset+octet-stream"

# Upload-Metadata is stored and sent back on every HEAD: a few fields, not a document.
METADATA_CHARS_MAX = 4096
FILENAME_CHARS_MAX = 255
# The metadata keys that are the submission's fields (POST /imports' form fields); others (a
# browser client's filetype, say) are kept in Upload-Metadata and otherwise ignored.
_FIELDS = ("policy", "lab", "dry_run", "encoding", "sheet", "connector_sync")
# How long a PATCH waits for another request of the same upload to let go (a client that
# resumes after a dropped connection may get there before the server has noticed the drop).
LOCK_WAIT_SECONDS = 5.0
_RETRY_AFTER_BUSY = 2
# Bytes gathered before a write to the spool file (as ledger.ingest.spool does).
_WRITE_BYTES = 1 << 20
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_METADATA_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII, no space, no comma
_UNSIGNED = re.compile(r"[0-9]{1,19}")


class TusError(ServiceError):
    """An error of the protocol, with the headers tus requires on its answer."""

    headers: ClassVar[Mapping[str, str]] = MappingProxyType({})


class UnsupportedTusVersion(TusError):
    status = 412
    default_code = "unsupported_tus_version"
    headers = MappingProxyType({"Tus-Version": TUS_VERSION})


class BadHeader(TusError):
    status = 400
    default_code = "invalid_header"

    def __init__(self, header: str, message: str) -> None:
        super().__init__("invalid_header", message, header=header)


class NotOffsetStream(TusError):
    status = 415
    default_code = "unsupported_media_type"


class OffsetMismatch(TusError):
    status = 409
    default_code = "offset_mismatch"

    def __init__(self, sent: int, offset: int) -> None:
        super().__init__(
            "offset_mismatch",
            f"Upload-Offset {sent} is not the upload's offset, {offset}: ask with HEAD and resume from there",
            offset=offset,
        )


class PastLength(TusError):
    status = 413
    default_code = "past_upload_length"


class ChecksumMismatch(TusError):
    status = 460
    default_code = "checksum_mismatch"


class UploadGone(TusError):
    status = 410
    default_code = "upload_expired"


class UploadBusy(TusError):
    status = 423
    default_code = "upload_busy"

    def __init__(self) -> None:
        super().__init__(
            "upload_busy",
            f"another request is writing to this upload; try again in {_RETRY_AFTER_BUSY} s",
            retry_after=_RETRY_AFTER_BUSY,
        )
        self.retry_after = _RETRY_AFTER_BUSY


class TusHeaders(msgspec.Struct, frozen=True, kw_only=True):
    """The request's headers that the protocol reads, as sent (None: absent)."""

    tus_resumable: str | None = None
    upload_length: str | None = None
    upload_defer_length: str | None = None
    upload_concat: str | None = None
    upload_offset: str | None = None
    upload_metadata: str | None = None
    upload_checksum: str | None = None
    content_type: str | None = None
    content_length: str | None = None
    transfer_encoding: str | None = None

    def has_body(self) -> bool:
        return self.transfer_encoding is not None or (self.content_length or "0").strip() not in ("", "0")


class UploadState(msgspec.Struct, frozen=True, kw_only=True):
    """What the protocol's answers say about an upload."""

    id: uuid.UUID
    offset: int
    length: int
    metadata: str
    expires_at: datetime
    # The import it became, once whole ("/imports/{task_id}").
    import_url: str | None = None

    @property
    def location(self) -> str:
        return f"/uploads/{self.id}"


def require_version(headers: TusHeaders) -> None:
    """Every request but OPTIONS says which version of tus it speaks: 412 for another (or none)."""
    if headers.tus_resumable != TUS_VERSION:
        raise UnsupportedTusVersion(
            "unsupported_tus_version", f"send Tus-Resumable: {TUS_VERSION}, the only version this server speaks"
        )


def capabilities(settings: Settings) -> dict[str, str]:
    """What OPTIONS advertises."""
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(settings.upload_bytes_max),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def http_date(moment: datetime) -> str:
    """RFC 9110's date format, as Upload-Expires takes it."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


class _HashCache:
    """The SHA-256 of each upload's acknowledged bytes, as far as this process has seen them, so
    that the last PATCH need not read the whole file again. An upload whose earlier PATCHes went
    to another process is hashed from its file instead. Acknowledged bytes never change, so a
    state for offset N stays right for as long as the upload lives."""

    def __init__(self, entries_max: int = 4096) -> None:
        self.entries_max = entries_max
        self._states: OrderedDict[uuid.UUID, tuple[int, Any]] = OrderedDict()

    def resume(self, upload_id: uuid.UUID, offset: int) -> Any | None:
        """A hash of the upload's first ``offset`` bytes to go on from, or None."""
        if offset == 0:
            return hashlib.sha256()
        entry = self._states.get(upload_id)
        if entry is None or entry[0] != offset:
            return None
        return entry[1].copy()

    def save(self, upload_id: uuid.UUID, offset: int, state: Any) -> None:
        self._states[upload_id] = (offset, state)
        self._states.move_to_end(upload_id)
        while len(self._states) > self.entries_max:
            self._states.popitem(last=False)

    def drop(self, upload_id: uuid.UUID) -> None:
        self._states.pop(upload_id, None)


_HASHES = _HashCache()


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_WRITE_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _unsigned(header: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    value = raw.strip()
    if not _UNSIGNED.fullmatch(value) or int(value) >= 2**63:
        raise BadHeader(header, f"{header} must be a whole number of bytes, 0 or more")
    return int(value)


def _checksum(raw: str | None) -> bytes | None:
    """The digest Upload-Checksum announces for the PATCH's bytes."""
    if raw is None:
        return None
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm.lower() not in CHECKSUM_ALGORITHMS:
        raise BadHeader(
            "Upload-Checksum",
            f"checksum algorithm {echo(algorithm)} is not supported; use one of {', '.join(CHECKSUM_ALGORITHMS)}",
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != hashlib.sha256().digest_size:
        raise BadHeader("Upload-Checksum", "Upload-Checksum must be 'sha256 ' and the base64 of a SHA-256 digest")
    return digest


def parse_metadata(raw: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated pairs of a key and the base64 of its value (a key alone
    has an empty value). Values are UTF-8 text here: every one of ours is."""
    if raw is None or not raw.strip():
        return {}
    if len(raw) > METADATA_CHARS_MAX:
        raise BadHeader("Upload-Metadata", f"Upload-Metadata is longer than {METADATA_CHARS_MAX} characters")
    values: dict[str, str] = {}
    for pair in raw.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if not _METADATA_KEY.fullmatch(key):
            raise BadHeader("Upload-Metadata", "each Upload-Metadata pair is a key (ASCII, no spaces) and a value")
        if key in values:
            raise BadHeader("Upload-Metadata", f"Upload-Metadata names {key!r} twice")
        try:
            values[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
            raise BadHeader(
                "Upload-Metadata", f"the value of {key!r} in Upload-Metadata is not the base64 of UTF-8 text"
            ) from None
    return values


def _text(values: Mapping[str, str], key: str) -> str | None:
    value = values.get(key)
    if value is not None and _CONTROL.search(value):
        raise InvalidRequest(
            "invalid_field", f"{key} must not contain NUL or other control characters (tab aside)", field=key
        )
    return value


def _filename(values: Mapping[str, str]) -> str | None:
    raw = _text(values, "filename")
    if raw is None:
        return None
    # As POST /imports keeps it: the name without any directories.
    name = Path(raw).name
    if len(name) > FILENAME_CHARS_MAX:
        raise InvalidRequest(
            "invalid_field", f"filename must be at most {FILENAME_CHARS_MAX} characters", field="filename"
        )
    return name or None


def _not_found(upload_id: str) -> NotFound:
    return NotFound("not_found", f"no upload {echo(upload_id)}")


def _state(row: UploadRow) -> UploadState:
    return UploadState(
        id=row.id,
        offset=row.received,
        length=row.length,
        metadata=row.metadata,
        expires_at=row.expires_at,
        import_url=None if row.import_id is None else f"/imports/{row.import_id}",
    )


def _storage_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(
            "spool_full", "the server has no room left to store the upload; try again later or tell its operator"
        )
    return exc


class Uploads:
    """The tus server of one app: its database, spool, settings and policies."""

    def __init__(
        self, pool: asyncpg.Pool[Any], database_url: str, settings: Settings, policies: PolicyRegistry
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.settings = settings
        self.policies = policies

    # ------------------------------------------------------------------ requests

    async def create(self, principal: Principal, headers: TusHeaders, body: AsyncIterator[bytes] | None) -> UploadState:
        """POST: a new upload, checked as a submission is; with a body (creation-with-upload), its
        first bytes too. An upload whose body fails is not kept: its creator never learnt where
        it is."""
        require_version(headers)
        if headers.upload_concat is not None:
            raise BadHeader("Upload-Concat", "this server does not concatenate uploads")
        length = _unsigned("Upload-Length", headers.upload_length)
        if length is None:
            message = "send Upload-Length: this server needs an upload's length when it is created"
            if headers.upload_defer_length is not None:
                message = "this server does not take Upload-Defer-Length; " + message
            raise BadHeader("Upload-Length", message)
        if length > self.settings.upload_bytes_max:
            raise PayloadTooLarge(
                "upload_too_large",
                f"Upload-Length {length} is larger than the limit of {self.settings.upload_bytes_max} bytes",
            )
        if body is not None and (headers.content_type or "").split(";")[0].strip().lower() != OFFSET_STREAM:
            raise NotOffsetStream("unsupported_media_type", f"send the upload's bytes as {OFFSET_STREAM}")
        checksum = _checksum(headers.upload_checksum) if body is not None else None
        values = parse_metadata(headers.upload_metadata)
        fields = {key: value for key in _FIELDS if (value := _text(values, key)) is not None}
        filename = _filename(values)
        idempotency_key = _text(values, "idempotency_key")
        imports.check_idempotency_key(idempotency_key)
        submission = imports.check_submission(self.policies, principal, fields)
        fields["lab"] = submission.lab
        await require_known(self.pool, [submission.lab])
        await imports.admit(self.pool, self.settings, principal)

        upload_id = uuid.uuid4()
        try:
            spool = imports.prepare_spool(self.settings).resolve()
            path = spool / f"tus-{upload_id.hex}.part"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SPOOL_FILE_MODE))
        except OSError as exc:
            raise _storage_error(exc) from exc
        now = datetime.now(UTC)
        row = UploadRow(
            id=upload_id,
            token_id=principal.token_id,
            lab=submission.lab,
            length=length,
            received=0,
            metadata=(headers.upload_metadata or "").strip(),
            fields=fields,
            filename=filename,
            idempotency_key=idempotency_key,
            spool_path=str(path),
            import_id=None,
            created_at=now,
            expires_at=now + timedelta(seconds=self.settings.upload_expiry_seconds),
        )
        try:
            await uploads_db.insert_upload(self.pool, row)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        if body is None and length > 0:
            return _state(row)
        try:
            return await self._write(
                principal, upload_id, start=0, body=body or _nothing(), checksum=checksum, headers=headers
            )
        except BaseException:
            await self._forget(upload_id)
            raise

    async def head(self, principal: Principal, upload_id: str, headers: TusHeaders) -> UploadState:
        """HEAD: where the upload is, and once it is whole, the import it became."""
        require_version(headers)
        return _state(await self._visible(self.pool, principal, upload_id))

    async def patch(
        self, principal: Principal, upload_id: str, headers: TusHeaders, body: AsyncIterator[bytes]
    ) -> UploadState:
        """PATCH: the bytes at the offset the client names, which must be the upload's."""
        require_version(headers)
        if (headers.content_type or "").split(";")[0].strip().lower() != OFFSET_STREAM:
            raise NotOffsetStream("unsupported_media_type", f"send the upload's bytes as {OFFSET_STREAM}")
        offset = _unsigned("Upload-Offset", headers.upload_offset)
        if offset is None:
            raise BadHeader("Upload-Offset", "send Upload-Offset: the offset the upload is at (HEAD says)")
        checksum = _checksum(headers.upload_checksum)
        # Checked before the lock, so that a refused PATCH costs no connection (and again under it).
        row = await self._visible(self.pool, principal, upload_id)
        self._check_offset(row, offset, headers)
        return await self._write(principal, row.id, start=offset, body=body, checksum=checksum, headers=headers)

    async def terminate(self, principal: Principal, upload_id: str, headers: TusHeaders) -> None:
        """DELETE: the upload and its bytes go (an import it became stays: it is the import's)."""
        require_version(headers)
        row = await self._visible(self.pool, principal, upload_id, expired_ok=True)
        async with self._locked(row.id) as conn:
            deleted = await uploads_db.delete_upload(conn, row.id)
        if deleted is not None and deleted.import_id is None:
            Path(deleted.spool_path).unlink(missing_ok=True)
        _HASHES.drop(row.id)

    # ------------------------------------------------------------------ the parts

    async def _visible(
        self, conn: Executor, principal: Principal, upload_id: str, *, expired_ok: bool = False
    ) -> UploadRow:
        """The upload, if it is the principal's: another token's, like an unknown id, is a 404."""
        try:
            key = uuid.UUID(upload_id)
        except ValueError:
            raise _not_found(upload_id) from None
        row = await uploads_db.get_upload(conn, key)
        if row is None or row.token_id != principal.token_id or not sees_lab(principal, row.lab):
            raise _not_found(upload_id)
        if row.expired and not expired_ok:
            raise UploadGone("upload_expired", "this upload has expired; create a new one")
        return row

    def _check_offset(self, row: UploadRow, offset: int, headers: TusHeaders) -> None:
        if offset != row.received:
            raise OffsetMismatch(offset, row.received)
        announced = _unsigned("Content-Length", headers.content_length)
        if announced is not None and offset + announced > row.length:
            raise PastLength(
                "past_upload_length",
                f"{announced} bytes at offset {offset} go past the upload's length, {row.length}; nothing was stored",
            )

    @contextlib.asynccontextmanager
    async def _locked(self, upload_id: uuid.UUID) -> AsyncIterator[Conn]:
        """The upload's lock, on a connection of its own (not the pool's: a PATCH may hold it for
        as long as its body takes), for the duration."""
        conn = await connect(self.database_url, application_name="ledger-upload")
        try:
            if not await uploads_db.lock_upload(conn, upload_id, wait_seconds=LOCK_WAIT_SECONDS):
                raise UploadBusy()
            try:
                yield conn
            finally:
                with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    await uploads_db.unlock_upload(conn, upload_id)
        finally:
            await conn.close()

    async def _write(
        self,
        principal: Principal,
        upload_id: uuid.UUID,
        *,
        start: int,
        body: AsyncIterator[bytes],
        checksum: bytes | None,
        headers: TusHeaders,
    ) -> UploadState:
        async with self._locked(upload_id) as conn:
            # What the first look saw may have moved while this request waited for the lock.
            row = await self._visible(conn, principal, str(upload_id))
            self._check_offset(row, start, headers)
            if row.import_id is not None:
                # Whole already (an empty PATCH at its end is all that passes the check above).
                return _state(row)
            return await self._receive(conn, principal, row, start, body, checksum)

    async def _receive(
        self,
        conn: Conn,
        principal: Principal,
        row: UploadRow,
        start: int,
        body: AsyncIterator[bytes],
        checksum: bytes | None,
    ) -> UploadState:
        try:
            fd = os.open(row.spool_path, os.O_WRONLY)
        except FileNotFoundError:
            await self._forget(row.id)
            raise UploadGone("upload_lost", "this upload's bytes are gone from the server; create a new one") from None
        try:
            if os.fstat(fd).st_size < start:
                # The file lost bytes the offset counts (the disk was restored, say): what
                # would follow them could never be the client's file.
                await self._forget(row.id)
                raise UploadGone("upload_lost", "this upload's bytes are gone from the server; create a new one")
            # Bytes past the offset were never acknowledged (a PATCH refused, or a process that
            # died before it moved the offset): the client sends them again.
            os.ftruncate(fd, start)
            writer = _Writer(fd, start, row.length, checksum, _HASHES.resume(row.id, start))
            try:
                async for data in body:
                    writer.take(data)
                writer.flush()
            except PastLength:
                os.ftruncate(fd, start)
                raise
            except BaseException:
                # The client went away, stalled (408) or the server is stopping: what arrived is
                # kept, unless a checksum was to vouch for the whole of it.
                await self._keep_partial(conn, row, writer)
                raise
            if checksum is not None and writer.chunk_digest() != checksum:
                os.ftruncate(fd, start)
                raise ChecksumMismatch(
                    "checksum_mismatch", "the bytes received do not match Upload-Checksum; they were discarded"
                )
            await asyncio.to_thread(os.fdatasync, fd)
            end = start + writer.written
            if end < row.length:
                expires = await uploads_db.set_received(
                    conn, row.id, was=start, now=end, expiry_seconds=self.settings.upload_expiry_seconds
                )
                if expires is None:  # pragma: no cover - the lock is held: nothing else moves it
                    raise Conflict("offset_mismatch", "the upload moved while this request held its lock")
                if writer.file_hash is not None:
                    _HASHES.save(row.id, end, writer.file_hash)
                return UploadState(id=row.id, offset=end, length=row.length, metadata=row.metadata, expires_at=expires)
            return await self._complete(principal, row, start, writer)
        except OSError as exc:
            raise _storage_error(exc) from exc
        finally:
            os.close(fd)

    async def _keep_partial(self, conn: Conn, row: UploadRow, writer: _Writer) -> None:
        start = writer.start
        try:
            if writer.checksum is not None:
                os.ftruncate(writer.fd, start)
                return
            writer.flush()
            if writer.written == 0:
                return
            await asyncio.to_thread(os.fdatasync, writer.fd)
            end = start + writer.written
            if end >= row.length:
                # Every byte came but the request did not end well: the next PATCH (an empty
                # one at the end, or a HEAD and then that) completes it.
                os.ftruncate(writer.fd, start)
                return
            await uploads_db.set_received(
                conn, row.id, was=start, now=end, expiry_seconds=self.settings.upload_expiry_seconds
            )
            if writer.file_hash is not None:
                _HASHES.save(row.id, end, writer.file_hash)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # Nothing acknowledged: the bytes past the offset are dropped by the next PATCH.
            return

    async def _complete(self, principal: Principal, row: UploadRow, start: int, writer: _Writer) -> UploadState:
        """The last byte is in: the import is recorded as POST /imports records it, with the upload
        marked whole in the same transaction. Refused (the queue is full, the lab is gone, the
        key was used for another file), the bytes of this PATCH are dropped and the offset stays
        where it was, so that the same PATCH may be sent again."""
        digest = (
            writer.file_hash.hexdigest()
            if writer.file_hash is not None
            else await asyncio.to_thread(_sha256_of, row.spool_path)
        )
        spooled = SpoolResult(path=row.spool_path, size=row.length, sha256_hex=digest)
        expires: list[datetime] = []

        async def mark_whole(tx: Conn, import_id: uuid.UUID) -> None:
            moved = await uploads_db.complete(
                tx, row.id, was=start, import_id=import_id, expiry_seconds=self.settings.upload_expiry_seconds
            )
            if moved is None:  # pragma: no cover - the lock is held: nothing else moves it
                raise Conflict("offset_mismatch", "the upload moved while this request held its lock")
            expires.append(moved)

        # Refused, the file is left as it is: the next PATCH cuts it back to the offset, which
        # stays where it was (cutting it here could race a commit that did happen).
        created, accepted = await imports.record_import(
            self.pool,
            self.settings,
            self.policies,
            principal,
            spooled=spooled,
            filename=row.filename,
            fields=row.fields,
            idempotency_key=row.idempotency_key,
            also=mark_whole,
        )
        _HASHES.drop(row.id)
        if created:
            # A resumable upload's stage "upload" (GET /metrics) runs from its creation to its last
            # byte, pauses and resumptions included: what the lab manager waited.
            seconds = (datetime.now(UTC) - row.created_at).total_seconds()
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await metrics_stages.record_stages(self.pool, uuid.UUID(accepted["task_id"]), {"upload": seconds})
        return UploadState(
            id=row.id,
            offset=row.length,
            length=row.length,
            metadata=row.metadata,
            expires_at=expires[0],
            import_url=str(accepted["status_url"]),
        )

    async def _forget(self, upload_id: uuid.UUID) -> None:
        """Delete an upload that cannot go on, with its bytes."""
        deleted = await uploads_db.delete_upload(self.pool, upload_id)
        if deleted is not None and deleted.import_id is None:
            Path(deleted.spool_path).unlink(missing_ok=True)
        _HASHES.drop(upload_id)


class _Writer:
    """One PATCH's bytes into the upload's file at its offset, hashed as they are written."""

    def __init__(self, fd: int, start: int, length: int, checksum: bytes | None, file_hash: Any | None) -> None:
        self.fd = fd
        self.start = start
        self.room = length - start
        self.checksum = checksum
        self.file_hash = file_hash
        self._chunk_hash = hashlib.sha256() if checksum is not None else None
        self.written = 0
        self._buffer = bytearray()

    def take(self, data: bytes) -> None:
        if self.written + len(self._buffer) + len(data) > self.room:
            raise PastLength(
                "past_upload_length",
                f"the PATCH goes past the upload's length ({self.start + self.room} bytes); nothing of it was stored",
            )
        self._buffer += data
        if len(self._buffer) >= _WRITE_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        view = memoryview(self._buffer)
        position = self.start + self.written
        while view:
            done = os.pwrite(self.fd, view, position)
            position += done
            view = view[done:]
        view.release()
        if self.file_hash is not None:
            self.file_hash.update(self._buffer)
        if self._chunk_hash is not None:
            self._chunk_hash.update(self._buffer)
        self.written += len(self._buffer)
        self._buffer.clear()

    def chunk_digest(self) -> bytes | None:
        return None if self._chunk_hash is None else self._chunk_hash.digest()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an (empty) async generator
