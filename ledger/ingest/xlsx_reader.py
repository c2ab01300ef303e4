"""XLSX manifests through python-calamine: one sheet, its cells as the text a person typed.

Before calamine touches the file the archive is checked with our own code: member count,
declared sizes and compression ratios, then every member is actually inflated (and thrown
away) to check the sizes it declares, since a zip bomb lies about them. Calamine holds the
chosen sheet in memory as a dense grid (about 0.75 KB a 10-column row, measured), so what a
workbook may inflate to, and the grid its cell references span, are capped (limits.xlsx_*):
worksheets are scanned for their extent on the same inflating pass. That scan costs about as
much as calamine's own load; it is the price of never letting a 2 KB file ask for 17 billion
cells.

Cells: a date or datetime cell at midnight reads ``YYYY-MM-DD``; a datetime with a time
``YYYY-MM-DDTHH:MM:SS``; a whole number ``12`` (not ``12.0``); other numbers with 15
significant digits, which is what Excel shows and strips binary float artefacts
(800.3200000000001 reads 800.32); booleans ``true``/``false``; text as is (a text date stays
text, for the policy to judge). Blank rows are skipped and not counted, as in CSV; data rows
count from 1 after the header, the first non-blank row.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from python_calamine import CalamineWorkbook, SheetTypeEnum

from ledger.ingest.csv_reader import Record, RecordError
from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import (
    cell_chars_max,
    row_cells_max,
    xlsx_cells_max,
    xlsx_members_max,
    xlsx_ratio_floor,
    xlsx_ratio_max,
    xlsx_uncompressed_max,
)

__all__ = ["XlsxManifestReader", "cell_text", "check_archive"]

_INFLATE_CHUNK = 1 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")
# A cell's reference and a row's number. Spreadsheet writers put ``r`` first and plain
# (the fast patterns, with a literal start); a part where some cell or row does not match
# them is searched again, more slowly, for any attribute order, quoting, spacing and
# namespace prefix (<x:c>), and a reference that is not plain letters and digits (an
# entity, say) is refused rather than guessed at.
_CELL_FAST = re.compile(rb'<c(?: r="([A-Z]+)([0-9]+)")?[\s/>]')
_ROW_FAST = re.compile(rb'<row(?: r="([0-9]+)")?[\s/>]')
_PREFIXED = re.compile(rb"<[A-Za-z_][\w.-]*:(?:c|row)[\s/>]")
_CELL_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?c[\s/>]")
_ROW_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s/>]")
_CELL_REF = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?c\s[^>]*?\br\s*=\s*["']([A-Za-z]+)([0-9]+)["']""")
_ROW_REF = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?row\s[^>]*?\br\s*=\s*["']([0-9]+)["']""")
_ODD_REF = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?(?:c|row)\s[^>]*?\br\s*=\s*["'](?![A-Za-z]*[0-9]+["'])""")
_TAG_CARRY_MAX = 1 << 20


def _largest(numbers: Sequence[bytes]) -> int:
    """The largest of decimal numbers written in digits."""
    longest = max(map(len, numbers))
    if min(map(len, numbers)) == longest:
        return int(max(numbers))  # same length: the bytes order is the numeric order
    return max(map(int, numbers))


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ch - 64
    return n


class _SheetExtent:
    """The rectangle calamine will allocate for a worksheet part, from its XML.

    Calamine holds a sheet as a dense grid from its first to its last cell, so a 2 KB file
    with one cell at XFD1048576 would ask for 17 billion cells. Cells are found by their
    ``r`` reference; cells and rows without one are placed by position, so they are counted
    and added to the extent, which keeps the bound safe whatever the writer.
    """

    def __init__(self) -> None:
        self.rows = self.columns = 0
        self.cells = self.cells_placed = 0
        self.row_tags = self.rows_placed = 0
        self._carry = b""

    def feed(self, data: bytes) -> None:
        data = self._carry + data
        end = data.rfind(b">") + 1  # judge whole tags only; text never holds a raw '<'
        if len(data) - end > _TAG_CARRY_MAX:
            raise _corrupt("a worksheet of the workbook holds a tag too long for XML a spreadsheet writes")
        self._carry = data[end:]
        refs = _CELL_FAST.findall(data, 0, end)
        rows = _ROW_FAST.findall(data, 0, end)
        cells, row_tags = len(refs), len(rows)
        letters, numbers = zip(*refs, strict=True) if refs else ((), ())
        if b"" in letters or b"" in rows or _PREFIXED.search(data, 0, end):
            if _ODD_REF.search(data, 0, end):
                raise _corrupt("a worksheet of the workbook holds a cell reference that is not a plain A1 reference")
            cells, row_tags = len(_CELL_TAG.findall(data, 0, end)), len(_ROW_TAG.findall(data, 0, end))
            refs, rows = _CELL_REF.findall(data, 0, end), _ROW_REF.findall(data, 0, end)
            letters, numbers = zip(*refs, strict=True) if refs else ((), ())
        self.cells += cells
        self.row_tags += row_tags
        if refs:
            self.cells_placed += len(refs)
            self.rows = max(self.rows, _largest(numbers))
            self.columns = max(self.columns, max(map(_column_number, set(letters))))
        if rows:
            self.rows_placed += len(rows)
            self.rows = max(self.rows, _largest(rows))

    @property
    def grid(self) -> tuple[int, int]:
        # Unplaced rows and cells go after the furthest placed ones: a safe upper bound.
        return self.rows + max(self.row_tags - self.rows_placed, 0), self.columns + max(
            self.cells - self.cells_placed, 0
        )


def _bomb(message: str) -> ManifestError:
    return ManifestError("zip_bomb", message)


def _corrupt(message: str) -> ManifestError:
    return ManifestError("corrupt_xlsx", message)


def check_archive(path: Path) -> None:
    """Refuse a workbook that would inflate past the limits, or whose parts are damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _corrupt(f"the Excel workbook is truncated or damaged and cannot be opened ({exc})") from exc
    if len(members) > xlsx_members_max:
        raise _bomb(f"the workbook archive holds {len(members)} parts, more than {xlsx_members_max}")
    declared = sum(m.file_size for m in members)
    if declared > xlsx_uncompressed_max:
        raise ManifestError(
            "archive_too_large",
            f"the workbook inflates to {declared} bytes, more than the limit of {xlsx_uncompressed_max}; "
            "export it as CSV instead",
        )
    for m in members:
        if m.file_size > xlsx_ratio_floor and m.file_size > xlsx_ratio_max * max(m.compress_size, 1):
            raise _bomb(
                f"part {m.filename!r} inflates {m.file_size // max(m.compress_size, 1)}-fold "
                f"({m.compress_size} to {m.file_size} bytes), more than a spreadsheet ever does"
            )
    with path.open("rb") as f:
        for m in members:
            sheet = m.filename.startswith("xl/worksheets/") and m.filename.endswith(".xml")
            extent = _SheetExtent() if sheet else None
            actual = _inflated_size(f, m, extent)
            if actual > m.file_size:
                raise _bomb(f"part {m.filename!r} declares {m.file_size} bytes but inflates to more")
            if actual < m.file_size:
                raise _corrupt(f"part {m.filename!r} declares {m.file_size} bytes but holds {actual}: it is truncated")
            if extent is not None:
                rows, columns = extent.grid
                if rows * columns > xlsx_cells_max:
                    raise ManifestError(
                        "sheet_too_large",
                        f"worksheet part {m.filename!r} spans {rows} rows by {columns} columns, more than the "
                        f"{xlsx_cells_max} cells a sheet may span (a stray cell far from the data does this); "
                        "delete it, or export the sheet as CSV",
                    )


def _inflated_size(f: BinaryIO, member: zipfile.ZipInfo, extent: _SheetExtent | None) -> int:
    """Inflate ``member`` for its true size, stopping one byte past what it declares; a
    worksheet's bytes go through ``extent`` on the way."""
    f.seek(member.header_offset)
    raw = f.read(_LOCAL_HEADER.size)
    if len(raw) < _LOCAL_HEADER.size:
        raise _corrupt(f"the workbook is truncated inside part {member.filename!r}")
    magic, name_len, extra_len = _LOCAL_HEADER.unpack(raw)
    if magic != b"PK\x03\x04":
        raise _corrupt(f"part {member.filename!r} of the workbook is damaged")
    f.seek(member.header_offset + _LOCAL_HEADER.size + name_len + extra_len)
    if member.compress_type == zipfile.ZIP_STORED:
        if extent is not None:
            for start in range(0, member.compress_size, _INFLATE_CHUNK):
                extent.feed(f.read(min(_INFLATE_CHUNK, member.compress_size - start)))
        return member.compress_size
    if member.compress_type != zipfile.ZIP_DEFLATED:
        raise _corrupt(
            f"part {member.filename!r} uses compression method {member.compress_type}, which Excel never writes"
        )
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    limit = min(member.file_size, xlsx_uncompressed_max)
    left, size = member.compress_size, 0
    try:
        while left > 0 and not inflater.eof:
            chunk = f.read(min(_INFLATE_CHUNK, left))
            if not chunk:
                raise _corrupt(f"the workbook is truncated inside part {member.filename!r}")
            left -= len(chunk)
            while chunk:
                out = inflater.decompress(chunk, _INFLATE_CHUNK)
                size += len(out)
                if size > limit:
                    return size
                if extent is not None:
                    extent.feed(out)
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _corrupt(f"part {member.filename!r} of the workbook is damaged ({exc})") from exc
    return size


def cell_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        if value != value or value in (float("inf"), float("-inf")):
            return ""
        return format(Decimal(f"{value:.15g}"), "f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        if value.time() == dt.time():
            return value.date().isoformat()
        return value.isoformat(timespec="seconds")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    return "" if value is None else str(value)


class XlsxManifestReader:
    def __init__(self, path: Path, *, sheet: str | None = None) -> None:
        check_archive(path)
        self._size = path.stat().st_size
        self._warnings: list[dict[str, Any]] = []
        try:
            workbook = CalamineWorkbook.from_path(str(path))
        except Exception as exc:  # calamine raises its own errors and, on odd input, bare ones
            raise _corrupt(f"the Excel workbook cannot be read: {exc}") from exc
        try:
            names = workbook.sheet_names
            if sheet is not None:
                if sheet not in names:
                    listed = ", ".join(repr(n) for n in names)
                    raise ManifestError(
                        "sheet_not_found", f"the workbook has no sheet {sheet!r}; its sheets are {listed}"
                    )
                self.sheet = sheet
            else:
                worksheets = [m.name for m in workbook.sheets_metadata if m.typ == SheetTypeEnum.WorkSheet]
                if not worksheets:
                    raise ManifestError("empty", "the workbook has no worksheet")
                self.sheet = worksheets[0]
            try:
                data = workbook.get_sheet_by_name(self.sheet)
                self._height = max(data.height, 1)
                self._rows: Iterator[list[Any]] = iter(data.iter_rows())
            except Exception as exc:
                raise _corrupt(f"sheet {self.sheet!r} of the workbook cannot be read: {exc}") from exc
        finally:
            # The sheet's cells are already in memory; the archive is no longer needed.
            workbook.close()
        self._read = 0
        self._row = 0
        header = self._next_nonblank()
        if header is None:
            raise ManifestError("empty", f"sheet {self.sheet!r} has no header row")
        while header and not header[-1].strip():
            header.pop()
        if len(header) > row_cells_max:
            raise ManifestError("not_tabular", f"the header row has {len(header)} cells, more than {row_cells_max}")
        self.header: list[str] = header

    @property
    def bytes_read(self) -> int:
        # Calamine inflates the sheet up front; progress is the share of its rows read.
        return min(self._size, self._size * self._read // self._height)

    @property
    def format(self) -> dict[str, Any]:
        return {"type": "xlsx", "sheet": self.sheet}

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return self._warnings

    def close(self) -> None:
        self._rows = iter(())

    def __enter__(self) -> XlsxManifestReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_nonblank(self) -> list[str] | None:
        for raw in self._rows:
            self._read += 1
            cells = [cell_text(v) for v in raw]
            if any(c.strip() for c in cells):
                return cells
        return None

    def __iter__(self) -> Iterator[Record]:
        width = len(self.header)
        while True:
            cells = self._next_nonblank()
            if cells is None:
                return
            self._row += 1
            # Calamine gives every row the sheet's full width: cells past the header that
            # are empty are formatting, not data.
            while len(cells) > width and not cells[-1].strip():
                cells.pop()
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            long = next((i for i, c in enumerate(cells) if len(c) > cell_chars_max), None)
            if long is not None:
                yield Record(
                    self._row,
                    [c[:256] for c in cells[:16]],
                    RecordError("record_too_long", f"cell {long + 1} is longer than {cell_chars_max} characters"),
                )
                continue
            nul = next((i for i, c in enumerate(cells) if "\x00" in c), None)
            if nul is not None:
                # An escaped NUL (_x0000_) is never manifest data, and PostgreSQL's text and
                # jsonb cannot hold it: the row is quarantined with the NUL taken out.
                yield Record(
                    self._row,
                    [c.replace("\x00", "") for c in cells],
                    RecordError("nul_byte", f"cell {nul + 1} holds a NUL character, which is never manifest data"),
                )
                continue
            yield Record(self._row, cells)
