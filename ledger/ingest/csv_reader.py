"""Streaming CSV manifests: records one at a time from disk, memory bounded whatever the file.

Rows are CSV *records*: a quoted field spanning lines is one row. Data rows count from 1
(the header is row 0). Blank records (no cells, or only empty cells, as spreadsheets export
trailing lines) are skipped and not counted. A physical line or field past the limits makes
its record a row with an error (it is quarantined, never silently dropped) and reading goes
on with the next line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import field_bytes_max, row_cells_max
from ledger.ingest.text_reader import CappedLines, TextSource, TextSourceReader

__all__ = ["CsvManifestReader", "Record", "RecordError", "iter_chunks", "sniff_delimiter"]

_CUT_CELLS = 16  # cells kept from a record that broke the reader's own limits
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}


class RecordError(msgspec.Struct, frozen=True):
    rule: str
    message: str


class Record(msgspec.Struct, frozen=True):
    row: int
    cells: list[str]
    error: RecordError | None = None


class CsvManifestReader(TextSourceReader):
    def __init__(self, path: Path, *, encoding: str | None = None, delimiter: str | None = None) -> None:
        self._source = TextSource(path, encoding)
        try:
            self.encoding = self._source.encoding
            self.delimiter = delimiter or sniff_delimiter(self._source.head)
            self._lines = CappedLines(self._source.text, field_bytes_max)
            csv.field_size_limit(field_bytes_max)
            # strict: a quote that is never closed is an error at the end of the file, not
            # rows silently swallowed into one cell.
            self._csv = csv.reader(self._lines, delimiter=self.delimiter, strict=True)
            self._row = 0
            header = self._next_nonblank()
            if header is None:
                raise ManifestError("empty", "the file has no header row")
            if header.error is not None:
                raise ManifestError("not_tabular", f"the header row cannot be read: {header.error.message}")
            if self._source.explicit and not any(c.isascii() and c.isalpha() for c in "".join(header.cells)):
                raise ManifestError(
                    "encoding",
                    f"read as {self.encoding}, the encoding given with the upload, the header holds no "
                    f"readable column name ({''.join(header.cells)[:40]!r}); is the encoding right?",
                )
            self.header: list[str] = header.cells
        except BaseException:
            self._source.close()
            raise

    @property
    def format(self) -> dict[str, Any]:
        return {"type": "csv", "encoding": self.encoding, "delimiter": self.delimiter}

    def _next_nonblank(self) -> Record | None:
        while True:
            before, nul = self._lines.overlong, self._lines.nul
            first_line = self._lines.lines + 1
            try:
                cells = next(self._csv)
            except StopIteration:
                return None
            except csv.Error as exc:
                lines = self._lines.lines - first_line + 1
                if "unexpected end of data" in str(exc):
                    message = (
                        f"a quoted field opened on line {first_line} is never closed: the rest of the "
                        f"file ({lines} lines) was read into it"
                    )
                else:
                    message = f"the record on line {first_line} is not valid CSV: {exc}"
                return self._broken("malformed_record", message, [])
            except UnicodeDecodeError as exc:  # checked at open; only a file changed under us
                raise ManifestError(
                    "encoding",
                    f"the file is not valid {self.encoding}: byte 0x{exc.object[exc.start]:02x} "
                    f"near data row {self._row + 1} cannot be decoded",
                    row=self._row + 1,
                ) from exc
            if self._lines.nul != nul:
                return self._broken("nul_byte", "the record holds NUL bytes, which are never manifest data", cells)
            if self._lines.overlong != before:
                return self._broken(
                    "record_too_long", f"a line of this record is longer than {field_bytes_max} characters", cells
                )
            # Blank: every cell whitespace, so their concatenation is (the first cell settles
            # nearly every row without the join).
            if not cells or (not cells[0].strip() and not "".join(cells).strip()):
                continue
            if len(cells) > row_cells_max:
                return self._broken(
                    "too_many_cells", f"the record has {len(cells)} cells, more than {row_cells_max}", cells
                )
            return Record(self._row, cells)

    def _broken(self, rule: str, message: str, cells: list[str]) -> Record:
        return Record(self._row, [c[:256] for c in cells[:_CUT_CELLS]], RecordError(rule, message))

    def __iter__(self) -> Iterator[Record]:
        while True:
            self._row += 1
            record = self._next_nonblank()
            if record is None:
                return
            yield record


def sniff_delimiter(head: str) -> str:
    """The delimiter of the header record: the one of ``,`` ``;`` TAB found outside quotes.

    The header holds column names, which contain none of them, so counting is exact where
    csv.Sniffer guesses from letter frequencies; a header with two of them is refused rather
    than guessed.
    """
    counts = dict.fromkeys(_DELIMITERS, 0)
    quoted = False
    for ch in head.lstrip("\ufeff \r\n"):
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "\n":
            break
        elif ch in counts:
            counts[ch] += 1
    found = [d for d, n in counts.items() if n]
    if len(found) > 1:
        named = " and ".join(f"{_DELIMITERS[d]} ({counts[d]}x)" for d in found)
        raise ManifestError(
            "mixed_delimiters",
            f"the header row mixes delimiters: {named}; a manifest uses one of comma, semicolon or tab",
            row=0,
        )
    return found[0] if found else ","


def iter_chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
