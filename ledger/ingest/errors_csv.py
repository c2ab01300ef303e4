"""The error report: one CSV line per broken rule, then the row's original cells.

Spreadsheet-safe (OWASP CSV injection): a cell that starts with ``=``, ``+``, ``-``, ``@``,
TAB or CR is prefixed with a single quote, so no spreadsheet evaluates it. The text starts
with a UTF-8 BOM because Excel only detects UTF-8 in a CSV by its BOM.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

__all__ = ["ErrorReportRow", "iter_errors_csv", "neutralise_cell"]

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_LINES_PER_CHUNK = 500


class ErrorReportRow(msgspec.Struct, frozen=True):
    row: int
    errors: list[dict[str, str]]
    cells: list[str]


def neutralise_cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _line(writer: Any, buffer: io.StringIO, cells: Sequence[str]) -> None:
    writer.writerow([neutralise_cell(c) for c in cells])


async def iter_errors_csv(header: Sequence[str], rows: AsyncIterator[ErrorReportRow]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    _line(writer, buffer, ["row", "field", "rule", "message", *header])
    lines = 0
    async for item in rows:
        for error in item.errors:
            _line(writer, buffer, [str(item.row), error["field"], error["rule"], error["message"], *item.cells])
            lines += 1
        if lines >= _LINES_PER_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            lines = 0
    yield buffer.getvalue()
