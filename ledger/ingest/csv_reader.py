"""Streaming CSV manifests: records one at a time from disk, memory bounded whatever the file.

Rows are CSV *records*: a quoted field spanning lines is one row. Data rows count from 1
(the header is row 0). Blank records (no cells, or only empty cells, as spreadsheets export
trailing lines) are skipped and not counted. A physical line or field past the limits makes
its record a row with an error (it is quarantined, never silently dropped) and reading goes
on with the next line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import field_bytes_max, row_cells_max, sniff_bytes
from ledger.ingest.sniff import sniff

__all__ = ["CsvManifestReader", "Record", "RecordError", "iter_chunks"]

_CUT_CELLS = 16  # cells kept from a record that broke the reader's own limits


class RecordError(msgspec.Struct, frozen=True):
    rule: str
    message: str


class Record(msgspec.Struct, frozen=True):
    row: int
    cells: list[str]
    error: RecordError | None = None


class _Lines:
    """Lines for the csv module, each at most ``cap`` characters; longer lines are cut, their
    rest skipped, and counted so the reader can flag the record that contained them."""

    def __init__(self, text: io.TextIOBase, cap: int) -> None:
        self._text = text
        self._cap = cap
        self.overlong = 0
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
            self.lines += 1
            yield line


class CsvManifestReader:
    def __init__(self, path: Path, *, delimiter: str = ",") -> None:
        self._binary = path.open("rb")
        try:
            sniffed = sniff(self._binary.read(sniff_bytes))
            self._binary.seek(sniffed.bom_len)
            self.encoding = sniffed.encoding
            self._text = io.TextIOWrapper(self._binary, encoding=sniffed.encoding, errors="strict", newline="")
            self._lines = _Lines(self._text, field_bytes_max)
            csv.field_size_limit(field_bytes_max)
            # strict: a quote that is never closed is an error at the end of the file, not
            # rows silently swallowed into one cell.
            self._csv = csv.reader(self._lines, delimiter=delimiter, strict=True)
            self._row = 0
            header = self._next_nonblank()
            if header is None:
                raise ManifestError("empty", "the file has no header row")
            if header.error is not None:
                raise ManifestError("not_tabular", f"the header row cannot be read: {header.error.message}")
            self.header: list[str] = header.cells
        except BaseException:
            self._binary.close()
            raise

    @property
    def bytes_read(self) -> int:
        return self._binary.tell()

    @property
    def format(self) -> dict[str, Any]:
        return {"type": "csv", "encoding": self.encoding, "delimiter": ","}

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self._binary.close()

    def __enter__(self) -> CsvManifestReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_nonblank(self) -> Record | None:
        while True:
            before = self._lines.overlong
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
            except UnicodeDecodeError as exc:
                raise ManifestError(
                    "encoding",
                    f"the file is not valid {self.encoding}: byte 0x{exc.object[exc.start]:02x} "
                    f"near data row {self._row + 1} cannot be decoded",
                    row=self._row + 1,
                ) from exc
            if self._lines.overlong != before:
                return self._broken(
                    "record_too_long", f"a line of this record is longer than {field_bytes_max} characters", cells
                )
            if not cells or all(not c.strip() for c in cells):
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


def iter_chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
