"""What kind of file this is, from its first bytes rather than its name."""

from __future__ import annotations

import msgspec

from ledger.ingest.errors import ManifestError

__all__ = ["Sniffed", "sniff"]

_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (or an Excel file, which this import does not read yet)",
    b"%PDF": "a PDF document",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"\x1f\x8b": "a gzip archive",
    b"GIF8": "a GIF image",
    b"\xd0\xcf\x11\xe0": "a legacy Office document",
}


class Sniffed(msgspec.Struct, frozen=True):
    encoding: str
    bom_len: int


def sniff(prefix: bytes) -> Sniffed:
    if prefix.startswith(b"\xef\xbb\xbf"):
        sniffed = Sniffed("utf-8", 3)
    elif prefix.startswith(b"\xff\xfe"):
        sniffed = Sniffed("utf-16-le", 2)
    elif prefix.startswith(b"\xfe\xff"):
        sniffed = Sniffed("utf-16-be", 2)
    else:
        sniffed = Sniffed("utf-8", 0)
    body = prefix[sniffed.bom_len :]
    if not body.strip():
        raise ManifestError("empty", "the file is empty" if not prefix else "the file holds no text but blanks")
    for magic, what in _MAGIC.items():
        if body.startswith(magic):
            raise ManifestError("not_tabular", f"the file is {what}, not a CSV manifest")
    if sniffed.bom_len != 2 and b"\x00" in body:
        raise ManifestError("not_tabular", "the file contains NUL bytes: it is binary, not a CSV manifest")
    return sniffed
