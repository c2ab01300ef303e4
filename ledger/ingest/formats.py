"""Which reader a manifest gets: detected from its content, steered by the submitter's options.

Every reader has the same shape (``ManifestReader``): ``header``, records one at a time with
their row number (data rows count from 1), ``bytes_read`` for progress, ``format`` and
``warnings`` for the import record, ``close()``. The pipeline knows nothing else of formats.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import msgspec

from ledger.ingest.csv_reader import CsvManifestReader, Record
from ledger.ingest.jsonl_reader import JsonlManifestReader
from ledger.ingest.sniff import sniff
from ledger.ingest.text_reader import normalise_encoding
from ledger.ingest.xlsx_reader import XlsxManifestReader

__all__ = ["ManifestReader", "ReadOptions", "open_manifest"]


class ReadOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the submitter said about the file; None means detect it."""

    encoding: str | None = None
    sheet: str | None = None


class ManifestReader(Protocol):
    header: list[str]

    @property
    def bytes_read(self) -> int: ...

    @property
    def format(self) -> dict[str, Any]: ...

    @property
    def warnings(self) -> list[dict[str, Any]]: ...

    def __iter__(self) -> Iterator[Record]: ...

    def close(self) -> None: ...


def open_manifest(path: Path, options: ReadOptions | None = None) -> ManifestReader:
    """Open the right reader for ``path``; raises ManifestError when it is no table we read.

    The kind comes from the content: a zip holding ``xl/workbook.xml`` is XLSX, text whose
    first non-blank character is ``{`` is JSON Lines, other text is delimited. The file name
    is never consulted: exports are misnamed too often to trust it.
    """
    options = options or ReadOptions()
    encoding = normalise_encoding(options.encoding) if options.encoding else None
    kind = sniff(path, encoding).kind
    if kind == "xlsx":
        workbook = XlsxManifestReader(path, sheet=options.sheet)
        if encoding is not None:
            workbook.warnings.append(
                {"code": "encoding_ignored", "message": f"encoding {encoding!r} was given, but a workbook has its own"}
            )
        return workbook
    reader: JsonlManifestReader | CsvManifestReader
    if kind == "jsonl":
        reader = JsonlManifestReader(path, encoding=encoding)
    else:
        reader = CsvManifestReader(path, encoding=encoding)
    if options.sheet is not None:
        reader.warnings.append(
            {"code": "sheet_ignored", "message": f"sheet {options.sheet!r} was given, but the file is not a workbook"}
        )
    return reader
