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
    """Open the right reader for ``path``; raises ManifestError when it is no table we read."""
    return CsvManifestReader(path)
