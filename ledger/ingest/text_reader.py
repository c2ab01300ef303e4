"""A text manifest opened for reading: encoding settled, byte order mark skipped, lines capped.

The encoding is decided once, at open, from the whole file, by one streaming decode pass in
chunks (cheap: a pure-ASCII chunk is not even decoded). An encoding given with the upload is
obeyed, and a file it does not decode is refused. Otherwise a byte order mark decides, and a
UTF-16 file that does not decode is refused; a file with no mark is UTF-8 if every byte of it
is, else it is read as Windows-1252 and the import gets a warning naming the first byte that
was not UTF-8. Deciding on a prefix alone would refuse, or silently garble, a file whose only
accented letter sits past the prefix.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Self

from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import sniff_bytes
from ledger.ingest.sniff import bom_of, explicit_codec

__all__ = ["CappedLines", "TextSource", "Undecodable", "first_undecodable", "normalise_encoding"]

_SCAN_CHUNK = 1 << 20
_FALLBACK = "cp1252"
_LABELS = {"cp1252": "windows-1252", "utf-16-le": "utf-16-le", "utf-16-be": "utf-16-be", "utf-8": "utf-8"}


def _c1_controls(exc: UnicodeError) -> tuple[str, int]:
    # The five bytes cp1252 leaves undefined read as the C1 controls they are in Latin-1, as
    # browsers' windows-1252 does: a fallback must read every byte, not fail on a rare one.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "".join(chr(b) for b in exc.object[exc.start : exc.end]), exc.end


codecs.register_error("ledger.c1", _c1_controls)


class Undecodable(NamedTuple):
    offset: int
    byte: int
    line: int


def normalise_encoding(name: str) -> str:
    """The codec's canonical name; ManifestError ``invalid_encoding`` for a name Python lacks."""
    try:
        info = codecs.lookup(name.strip())
    except (LookupError, ValueError) as exc:
        raise ManifestError("invalid_encoding", f"unknown encoding {name!r}") from exc
    # rot13, base64, zlib and the like are codecs too, but not between bytes and text.
    if not getattr(info, "_is_text_encoding", True):
        raise ManifestError("invalid_encoding", f"{name!r} is not a text encoding")
    return info.name


def first_undecodable(binary: BinaryIO, start: int, encoding: str) -> Undecodable | None:
    """Where ``binary`` from ``start`` first fails to decode as ``encoding``, or None."""
    binary.seek(start)
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    ascii_compatible = encoding in ("utf-8", "cp1252", "iso8859-1", "ascii")
    offset, lines = start, 1
    while True:
        chunk = binary.read(_SCAN_CHUNK)
        pending = len(decoder.getstate()[0])
        try:
            if not chunk:
                decoder.decode(b"", final=True)
                return None
            if not (ascii_compatible and not pending and chunk.isascii()):
                decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            at = exc.start - pending  # relative to this chunk; negative inside the pending bytes
            byte = exc.object[exc.start] if exc.start < len(exc.object) else 0
            return Undecodable(offset + at, byte, lines + chunk[: max(at, 0)].count(b"\n"))
        except UnicodeError:  # a codec refusing the stream as a whole (utf-32 without its mark)
            return Undecodable(offset, chunk[0] if chunk else 0, lines)
        offset += len(chunk)
        lines += chunk.count(b"\n")


class CappedLines:
    """Physical lines, each at most ``cap`` characters; longer lines are cut, their rest
    skipped, and counted so the reader can flag the record that contained them. Lines with a
    NUL character are counted too: a NUL is never data in a manifest."""

    def __init__(self, text: io.TextIOBase, cap: int) -> None:
        self._text = text
        self._cap = cap
        self.overlong = 0
        self.nul = 0
        self.lines = 0

    def __iter__(self) -> Iterator[str]:
        readline, cap = self._text.readline, self._cap
        while True:
            line = readline(cap)
            if not line:
                return
            if len(line) == cap and not line.endswith("\n"):
                self.overlong += 1
                while True:  # discard the rest of the physical line
                    rest = readline(cap)
                    if not rest or rest.endswith("\n"):
                        break
                line = line[:256] + "\n"
            if "\x00" in line:
                self.nul += 1
                line = line.replace("\x00", "")
            self.lines += 1
            yield line


class TextSource:
    """The file as text. ``head`` is the decoded start of the file, for sniffing its shape."""

    def __init__(self, path: Path, encoding: str | None = None) -> None:
        self.binary: BinaryIO = path.open("rb")
        try:
            prefix = self.binary.read(sniff_bytes)
            self.warnings: list[dict[str, Any]] = []
            self.explicit = encoding is not None
            self.codec, start = self._settle(prefix, encoding)
            self.binary.seek(start)
            errors = "ledger.c1" if self.codec == _FALLBACK else "strict"
            self.head = codecs.getincrementaldecoder(self.codec)(errors="replace").decode(prefix[start:])
            self.text = io.TextIOWrapper(self.binary, encoding=self.codec, errors=errors, newline="")
        except BaseException:
            self.binary.close()
            raise

    @property
    def encoding(self) -> str:
        """The encoding as the import reports it."""
        return _LABELS.get(self.codec, self.codec)

    @property
    def bytes_read(self) -> int:
        return self.binary.tell()

    def close(self) -> None:
        self.binary.close()

    def _settle(self, prefix: bytes, explicit: str | None) -> tuple[str, int]:
        bom, bom_len = bom_of(prefix)
        if explicit is not None:
            codec, start = explicit_codec(normalise_encoding(explicit), prefix)
            bad = first_undecodable(self.binary, start, codec)
            if bad is not None:
                raise ManifestError(
                    "encoding",
                    f"the file is not valid {codec}, the encoding given with the upload: byte 0x{bad.byte:02x} "
                    f"at offset {bad.offset} cannot be decoded; send it without 'encoding' to have it detected",
                )
            return codec, start
        if bom is not None:
            bad = first_undecodable(self.binary, bom_len, bom)
            if bad is not None:
                raise ManifestError(
                    "encoding",
                    f"the file starts with a {bom.upper()} byte order mark but is not valid {bom.upper()}: "
                    f"byte 0x{bad.byte:02x} at offset {bad.offset} cannot be decoded",
                )
            return bom, bom_len
        bad = first_undecodable(self.binary, 0, "utf-8")
        if bad is None:
            return "utf-8", 0
        self.warnings.append(
            {
                "code": "encoding_fallback",
                "message": f"the file is not valid UTF-8 (byte 0x{bad.byte:02x} at offset {bad.offset}, line "
                f"{bad.line}); it was read as Windows-1252. If that is wrong, send it again with 'encoding'",
            }
        )
        return _FALLBACK, 0


class TextSourceReader:
    """What every reader over a ``TextSource`` answers the same way: progress, warnings, closing."""

    _source: TextSource

    @property
    def bytes_read(self) -> int:
        return self._source.bytes_read

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self._source.warnings

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
