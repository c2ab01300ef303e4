"""Receiving an upload: the multipart body is parsed as it streams in, the file part goes to
disk while its SHA-256 is computed, and nothing of it is held in memory beyond a buffer."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import msgspec
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from ledger.ingest.errors import MultipartError, UploadTooLarge
from ledger.ingest.limits import form_field_bytes_max, form_fields_bytes_max, form_fields_max

__all__ = ["MultipartUpload", "SpoolResult", "receive_multipart"]

FILE_FIELD = "file"
_WRITE_BYTES = 1 << 20
# A spooled manifest is readable by the service's user alone.
SPOOL_FILE_MODE = 0o600
# NUL and the other C0 controls (tab aside) and DEL: never in a filename or a text field.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_text(value: str, field: str) -> None:
    if _CONTROL.search(value):
        raise MultipartError(
            "invalid_field",
            f"{field} must not contain NUL or other control characters (tab aside)",
            field=field,
        )


class SpoolResult(msgspec.Struct, frozen=True):
    path: str
    size: int
    sha256_hex: str


class MultipartUpload(msgspec.Struct, frozen=True):
    file: SpoolResult | None
    filename: str | None
    fields: dict[str, str]


class _Receiver:
    """python-multipart callbacks: route each part to the spool file or a small text field."""

    def __init__(self, dest_dir: Path, max_bytes: int) -> None:
        self.dest_dir = dest_dir
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.path: Path | None = None
        self.size = 0
        self.digest = hashlib.sha256()
        self._out: BinaryIO | None = None
        self._buffer = bytearray()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._part: str | None = None
        self._value = bytearray()
        self._fields_count = 0
        self._fields_bytes = 0
        self.failure: MultipartError | None = None

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers.clear()
        self._part = None
        self._value.clear()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        _check_text(name, "a form field's name")
        self._part = name
        if name == FILE_FIELD:
            if self._out is not None:
                raise MultipartError("bad_multipart", "send exactly one 'file' part")
            raw = params.get(b"filename")
            if raw is not None:
                _check_text(raw.decode("utf-8", "replace"), "filename")
            self.filename = None if raw is None else Path(raw.decode("utf-8", "replace")).name[:255]
            self.path = self.dest_dir / f"upload-{secrets.token_hex(12)}.part"
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SPOOL_FILE_MODE)
            self._out = os.fdopen(fd, "wb")
        else:
            self._fields_count += 1
            if self._fields_count > form_fields_max:
                raise MultipartError("bad_multipart", f"the form has more than {form_fields_max} fields besides 'file'")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE_FIELD:
            chunk = data[start:end]
            self.size += len(chunk)
            if self.size > self.max_bytes:
                raise UploadTooLarge(self.max_bytes)
            self.digest.update(chunk)
            self._buffer += chunk
            if len(self._buffer) >= _WRITE_BYTES:
                self._flush()
        else:
            self._value += data[start:end]
            self._fields_bytes += end - start
            if len(self._value) > form_field_bytes_max:
                raise MultipartError(
                    "bad_multipart",
                    f"form field {self._part!r} is longer than {form_field_bytes_max} bytes",
                    field=self._part,
                )
            if self._fields_bytes > form_fields_bytes_max:
                raise MultipartError(
                    "bad_multipart", f"the form fields besides 'file' hold more than {form_fields_bytes_max} bytes"
                )

    def _part_end(self) -> None:
        if self._part == FILE_FIELD:
            self._flush()
        elif self._part:
            try:
                value = self._value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MultipartError(
                    "bad_multipart", f"form field {self._part!r} is not UTF-8 text", field=self._part
                ) from exc
            _check_text(value, self._part)
            self.fields[self._part] = value

    def _flush(self) -> None:
        if self._buffer and self._out is not None:
            self._out.write(self._buffer)
            self._buffer.clear()

    def close(self) -> None:
        self._flush()
        if self._out is not None:
            self._out.close()

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


async def receive_multipart(
    stream: AsyncIterator[bytes], content_type: str, dest_dir: Path, *, max_bytes: int
) -> MultipartUpload:
    """Parse a multipart/form-data body as it arrives. Raises MultipartError (bad request) or
    UploadTooLarge; on any failure the partial file is removed."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise MultipartError("bad_multipart", "send the manifest as multipart/form-data with a 'file' field")
    receiver = _Receiver(dest_dir, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
        receiver.close()
        if parser.state != MultipartState.END:
            # A body cut short (the client died, a proxy gave up) would otherwise be imported
            # as though the part of the file that arrived were the whole of it.
            raise MultipartError(
                "bad_multipart", "the multipart body ended before its closing boundary; send the whole body"
            )
    except MultipartParseError as exc:
        receiver.discard()
        raise MultipartError("bad_multipart", f"the multipart body is malformed: {exc}") from exc
    except BaseException:
        receiver.discard()
        raise
    if receiver.path is None:
        return MultipartUpload(file=None, filename=None, fields=receiver.fields)
    return MultipartUpload(
        file=SpoolResult(path=str(receiver.path), size=receiver.size, sha256_hex=receiver.digest.hexdigest()),
        filename=receiver.filename,
        fields=receiver.fields,
    )
