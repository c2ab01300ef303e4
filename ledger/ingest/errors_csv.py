"""The error report: one CSV line per broken rule, then the row's original cells.

Spreadsheet-safe (OWASP CSV injection): a cell is prefixed with a single quote, so no
spreadsheet evaluates it, when it starts with TAB or CR, or when its first character after any
leading whitespace (spaces, TAB, CR, LF, ideographic spaces…) is ``=``, ``+``, ``-`` or ``@``
or a compatibility form of one (full-width ``＝ ＋ － ＠``, the small forms): spreadsheets skip
that whitespace and fold those forms before deciding a cell is a formula. The text starts
with a UTF-8 BOM because Excel only detects UTF-8 in a CSV by its BOM.
"""

from __future__ import annotations

import csv
import io
import unicodedata
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

__all__ = ["ErrorReportRow", "iter_errors_csv", "neutralise_cell"]

_CONTROL_START = ("\t", "\r")
_FORMULA_CHARS = frozenset("=+-@")
_LINES_PER_CHUNK = 500


class ErrorReportRow(msgspec.Struct, frozen=True):
    row: int
    errors: list[dict[str, str]]
    cells: list[str]


def _is_formula(value: str) -> bool:
    if value.startswith(_CONTROL_START):
        return True
    rest = value.lstrip()
    return bool(rest) and unicodedata.normalize("NFKC", rest[0]) in _FORMULA_CHARS


def neutralise_cell(value: str) -> str:
    return "'" + value if _is_formula(value) else value


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
