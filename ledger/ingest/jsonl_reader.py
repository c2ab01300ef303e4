"""JSON Lines manifests: one JSON object per line, its keys the columns.

The header is the keys of the first object, in order; every later object is mapped by key
name, a missing key reading as an empty cell. A line that is not a JSON object, holds a key
the header lacks, or a nested value, becomes a row with an error (quarantined) and reading
goes on. Numbers keep their JSON text, so ``800.32`` stays ``800.32`` and never passes
through a float. Blank lines are skipped and not counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ledger.ingest.csv_reader import Record, RecordError
from ledger.ingest.errors import ManifestError
from ledger.ingest.limits import field_bytes_max, row_cells_max
from ledger.ingest.text_reader import CappedLines, TextSource, TextSourceReader

__all__ = ["JsonlManifestReader"]

_CUT = 256


class _NotARecord(Exception):
    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A \uD800-\uDFFF escape: half of a UTF-16 pair, text only with its other half.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _decode(line: str) -> Any:
    # Numbers come back as their own text: no float ever touches a quantity or a cost.
    try:
        obj = json.loads(line, parse_float=str, parse_int=str, parse_constant=_no_constant)
    except RecursionError:  # "[[[[..." a million deep: hostile, not a record
        raise ValueError("nested too deeply") from None
    if isinstance(obj, dict) and _SURROGATE_ESCAPE.search(line):
        # json reads "\ud800" alone as a lone surrogate, which is no character: nothing can
        # encode, store or hash it. (A proper pair decodes to one character and passes.)
        for key, value in obj.items():
            for text in (key, value):
                if isinstance(text, str) and not _is_text(text):
                    raise ValueError(f"field {key!r} holds a lone UTF-16 surrogate escape, which is not text")
    return obj


def _is_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        if "\x00" in value:
            # An escaped NUL (\u0000) decodes to a character PostgreSQL's text and jsonb cannot
            # hold: refused like a raw NUL byte, with the line kept as written.
            raise _NotARecord("nul_byte", f"{key!r} holds a NUL character, which is never manifest data")
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    raise _NotARecord(
        "nested_value", f"{key!r} holds a JSON {'object' if isinstance(value, dict) else 'array'}, not a value"
    )


class JsonlManifestReader(TextSourceReader):
    def __init__(self, path: Path, *, encoding: str | None = None) -> None:
        self._source = TextSource(path, encoding)
        try:
            self._lines = CappedLines(self._source.text, field_bytes_max)
            self._iter = iter(self._lines)
            self._row = 0
            first = self._next_line()
            if first is None:
                raise ManifestError("empty", "the file has no JSON object")
            line_no, line = first
            if self._lines.overlong or self._lines.nul:
                raise ManifestError("not_tabular", f"the first JSON line (line {line_no}) is too long or binary")
            try:
                obj = _decode(line)
            except ValueError as exc:
                raise ManifestError("not_tabular", f"line {line_no} is not valid JSON: {exc}") from exc
            if not isinstance(obj, dict) or not obj:
                raise ManifestError("not_tabular", f"line {line_no} is not a JSON object with fields")
            if len(obj) > row_cells_max:
                raise ManifestError("not_tabular", f"the first object has {len(obj)} fields, more than {row_cells_max}")
            self.header: list[str] = list(obj)
            self._positions = {key: i for i, key in enumerate(self.header)}
            self._first: dict[str, Any] | None = obj
        except BaseException:
            self._source.close()
            raise

    @property
    def format(self) -> dict[str, Any]:
        return {"type": "jsonl", "encoding": self._source.encoding}

    def _next_line(self) -> tuple[int, str] | None:
        for line in self._iter:
            if line.strip():
                return self._lines.lines, line
        return None

    def _record(self, obj: dict[str, Any]) -> list[str]:
        unknown = [key for key in obj if key not in self._positions]
        if unknown:
            shown = ", ".join(repr(k[:_CUT]) for k in unknown[:10])
            raise _NotARecord("unknown_field", f"the object has fields the first line does not: {shown}")
        cells = [""] * len(self.header)
        for key, value in obj.items():
            cells[self._positions[key]] = _cell(key, value)
        return cells

    def __iter__(self) -> Iterator[Record]:
        if self._first is not None:
            self._row += 1
            first, self._first = self._first, None
            yield self._read(first, "")
        while True:
            overlong, nul = self._lines.overlong, self._lines.nul
            item = self._next_line()
            if item is None:
                return
            self._row += 1
            line_no, line = item
            if self._lines.overlong != overlong:
                yield self._broken(
                    "record_too_long", f"line {line_no} is longer than {field_bytes_max} characters", line
                )
                continue
            if self._lines.nul != nul:
                yield self._broken("nul_byte", f"line {line_no} holds NUL bytes, which are never manifest data", line)
                continue
            try:
                obj = _decode(line)
            except ValueError as exc:
                yield self._broken("malformed_record", f"line {line_no} is not valid JSON: {exc}", line)
                continue
            if not isinstance(obj, dict):
                yield self._broken("malformed_record", f"line {line_no} is JSON but not an object", line)
                continue
            yield self._read(obj, line)

    def _read(self, obj: dict[str, Any], line: str) -> Record:
        try:
            return Record(self._row, self._record(obj))
        except _NotARecord as exc:
            return self._broken(exc.rule, exc.message, line or json.dumps(obj)[:_CUT])

    def _broken(self, rule: str, message: str, line: str) -> Record:
        return Record(self._row, [line.rstrip("\r\n")[:_CUT]], RecordError(rule, message))
