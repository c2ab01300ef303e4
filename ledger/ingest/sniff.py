"""What kind of file this is, from its first bytes rather than its name.

``sniff`` answers ``xlsx``, ``jsonl`` or ``delimited``, or refuses with a coded error saying
what the file is instead (``empty``, ``not_tabular``, ``corrupt_xlsx``). The encoding of a
text file is settled by its reader (``text_source``); here only a byte order mark and an
explicit encoding are used, to see the first character.
"""

from __future__ import annotations

import codecs
import zipfile
from pathlib import Path
from typing import Literal

import msgspec

from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import sniff_bytes

__all__ = ["BOMS", "Kind", "Sniffed", "bom_of", "explicit_codec", "sniff"]

Kind = Literal["xlsx", "jsonl", "delimited"]

BOMS: tuple[tuple[bytes, str], ...] = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)

_MAGIC = {
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
    b"GIF8": "a GIF image",
    b"\xd0\xcf\x11\xe0": "a legacy Office document (.xls/.doc) or an encrypted workbook; save it as XLSX or CSV",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"\x28\xb5\x2f\xfd": "a zstd archive",
    b"\xfd7zXZ": "an xz archive",
    b"SQLite format 3": "an SQLite database",
    b"\x7fELF": "an executable",
}
# Markers of an OOXML workbook inside the first local headers of a zip, to tell a damaged
# workbook from a damaged archive of anything else.
_XLSX_MARKERS = (b"xl/", b"[Content_Types].xml")


class Sniffed(msgspec.Struct, frozen=True):
    kind: Kind


def bom_of(prefix: bytes) -> tuple[str | None, int]:
    for mark, encoding in BOMS:
        if prefix.startswith(mark):
            return encoding, len(mark)
    return None, 0


def explicit_codec(codec: str, prefix: bytes) -> tuple[str, int]:
    """The codec to read with when the submitter named ``codec``, and where the text starts.

    Python's streaming UTF-16 decoder insists on a byte order mark, so a plain "utf-16" is
    made explicit: the mark's byte order when there is one, else little-endian (what Windows
    writes and what ``bytes.decode("utf-16")`` assumes here).
    """
    bom, bom_len = bom_of(prefix)
    if codec == "utf-16":
        return (bom, bom_len) if bom is not None and bom.startswith("utf-16") else ("utf-16-le", 0)
    if codec == "utf-8-sig":
        return "utf-8", bom_len if bom == "utf-8" else 0
    return codec, bom_len if bom == codec else 0


def sniff(path: Path, encoding: str | None = None) -> Sniffed:
    with path.open("rb") as f:
        prefix = f.read(sniff_bytes)
    if not prefix:
        raise ManifestError("empty", "the file is empty")
    if prefix.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Sniffed(_zip_kind(path, prefix))
    for magic, what in _MAGIC.items():
        if what and prefix.startswith(magic):
            raise ManifestError("not_tabular", f"the file is {what}, not a manifest")
    bom, bom_len = bom_of(prefix)
    codec, start = explicit_codec(encoding, prefix) if encoding else (bom or "utf-8", bom_len)
    text = _decode_prefix(prefix, start, codec)
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise ManifestError("empty", "the file holds no text but blanks")
    first_line = stripped.split("\n", 1)[0]
    if "\x00" in first_line:
        raise ManifestError("not_tabular", _nul_message(prefix))
    if any(c < " " and c not in "\t\r" for c in first_line[:4096]):
        raise ManifestError("not_tabular", "the header holds control characters: the file is binary, not a manifest")
    return Sniffed("jsonl" if stripped.startswith("{") else "delimited")


def _decode_prefix(prefix: bytes, start: int, encoding: str) -> str:
    # The prefix may end inside a character; whatever does not decode here is judged later,
    # by the full pass of the reader.
    try:
        return codecs.getincrementaldecoder(encoding)(errors="replace").decode(prefix[start:])
    except UnicodeError as exc:  # codecs that refuse a stream as a whole (utf-32 without its mark)
        raise ManifestError("encoding", f"the file does not start as {encoding} text: {exc}") from exc


def _nul_message(prefix: bytes) -> str:
    odd = prefix[1:512:2]
    if odd and odd.count(0) > 0.9 * len(odd):
        return (
            "the file contains NUL bytes in its header: it looks like UTF-16 without a byte order "
            "mark; send it again with encoding=utf-16-le (or utf-16-be)"
        )
    return "the file contains NUL bytes in its header: it is binary, not a manifest"


def _zip_kind(path: Path, prefix: bytes) -> Kind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if any(marker in prefix for marker in _XLSX_MARKERS):
            raise ManifestError(
                "corrupt_xlsx", f"the Excel workbook is truncated or damaged and cannot be opened ({exc})"
            ) from exc
        raise ManifestError("not_tabular", f"the file is a damaged ZIP archive, not a manifest ({exc})") from exc
    if "xl/workbook.xml" in names:
        return "xlsx"
    raise ManifestError("not_tabular", f"the file is {_zip_what(names)}, not an Excel workbook (XLSX) or a manifest")


def _zip_what(names: list[str]) -> str:
    if "word/document.xml" in names:
        return "a Word document"
    if any(n.startswith("ppt/") for n in names):
        return "a PowerPoint presentation"
    if "mimetype" in names and "content.xml" in names:
        return "an OpenDocument file (save it as XLSX or CSV)"
    if "xl/workbook.bin" in names:
        return "a binary Excel workbook (.xlsb; save it as XLSX or CSV)"
    if not names:
        return "an empty ZIP archive"
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"a ZIP archive of {shown}"
