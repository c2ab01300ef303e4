"""One sync: fetch every page, map every record onto the policy's columns, and spool the rows as
JSON Lines, the manifest of the sync's import; with the provenance of every page.

Records are written as their pages arrive (in page order: a page fetched ahead waits for the
ones before it), to a working file of (upstream key, row). A second pass writes the manifest
with one row per upstream key, the last one read: an upstream that lists a record twice (it
changed while the sync paged through) yields its latest state once, never a second row with the
same asset key, which the policy would quarantine as ``duplicate_key_in_manifest``.

How a sync ends (docs/connectors.md):
- ``ok``: every page was read.
- ``partial``: a page still failed transiently after its retries. What was read before it is
  the manifest, and the cursor ends where that data is complete.
- ``failed``: the upstream's answers cannot be trusted or followed (not JSON, no records list,
  a pagination loop, too many pages, a client error) or nothing at all was read: no manifest,
  nothing committed, the cursor stays where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import httpx
import msgspec

from ledger.connectors.definition import SourceDefinition
from ledger.connectors.fetch import Clock, Fetched, Fetcher, FetchError
from ledger.connectors.paging import PageRequest, Paginator, PagingError, paginator_for
from ledger.connectors.paths import MISSING, get_path, parse_path
from ledger.connectors.window import CursorState, Window, as_value

__all__ = ["PageProvenance", "RecordProblem", "SyncError", "SyncResult", "remove_leftovers", "run_sync"]

# A mapped value longer than this is not written whole: the manifest's reader takes lines of at
# most 1 MiB (a longer first line would refuse the whole import), and no policy column holds
# anything near it (lab-inventory's longest, description, is 500 characters).
VALUE_CHARS_MAX = 65_536

# Per-record problems kept in a sync's result (a source whose every record is broken says so
# with this many examples and a count, not a million lines).
PROBLEMS_KEPT = 1000

Status = Literal["ok", "partial", "failed"]


class PageProvenance(msgspec.Struct, frozen=True, kw_only=True):
    """One page as the ledger records it (docs/ledger-format.md §4.6): what was asked for, where
    it sits in the pagination, the SHA-256 of the body that came back, how many records
    it held; or the error that ended the sync there."""

    url: str
    cursor: str | None
    next: str | None
    sha256: str | None
    records: int
    error: str | None = None


class RecordProblem(msgspec.Struct, frozen=True, kw_only=True):
    """A record that could not be mapped: its row in the manifest (quarantined there), its
    upstream key, the column and what is wrong."""

    row: int
    upstream_id: str | None
    field: str
    rule: str
    message: str


class SyncError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    page: int | None = None  # 1-based


class SyncResult(msgspec.Struct, kw_only=True):
    status: Status
    pages: list[PageProvenance]
    errors: list[SyncError]
    problems: list[RecordProblem]
    problems_total: int
    fetched: int  # records in the pages read
    skipped: int  # at the saved cursor value and already committed by an earlier sync
    superseded: int  # listed again later in the same sync: the later one is the row
    records: int  # rows in the manifest
    cursor_from: str | None
    cursor_to: CursorState | None
    requests: int
    in_flight_max: int
    manifest: Path | None = None  # the JSON Lines file; None when failed
    manifest_sha256: str | None = None
    manifest_bytes: int = 0

    def record(self) -> dict[str, Any]:
        """What the server records of the sync (connector_syncs; POST /connectors/{name}/pulls)."""
        return {
            "status": self.status,
            "records": self.records,
            "fetched": self.fetched,
            "skipped": self.skipped,
            "pages": msgspec.to_builtins(self.pages),
            "errors": msgspec.to_builtins(self.errors),
            "problems": msgspec.to_builtins(self.problems),
            "cursor_from": self.cursor_from,
            "cursor_to": None if self.cursor_to is None else msgspec.to_builtins(self.cursor_to),
            "manifest_sha256": self.manifest_sha256 if self.manifest is not None else None,
        }


class _Mapper:
    def __init__(self, definition: SourceDefinition) -> None:
        self.columns = [(column, parse_path(path)) for column, path in definition.map.items()]
        self.key = parse_path(definition.key)
        self.incremental = parse_path(definition.incremental.field) if definition.incremental else None

    def key_of(self, record: Any) -> str | None:
        return as_value(get_path(record, self.key))

    def value_of(self, record: Any) -> str | None:
        return None if self.incremental is None else as_value(get_path(record, self.incremental))

    def row(self, record: Any) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
        """The row, and the problems: (column, rule, message)."""
        row: dict[str, Any] = {}
        problems: list[tuple[str, str, str]] = []
        if not isinstance(record, dict):
            for column, _ in self.columns:
                row[column] = ""
            problems.append(("record", "not_an_object", f"the record is a JSON {type(record).__name__}, not an object"))
            return row, problems
        for column, path in self.columns:
            # Most maps name a member of the record itself: one lookup, not a walk.
            value = record.get(path[0], MISSING) if len(path) == 1 else get_path(record, path)
            if type(value) is str and len(value) <= VALUE_CHARS_MAX:
                row[column] = value  # the usual case, tested first: text as it came
            elif value is MISSING or value is None:
                row[column] = ""
            elif isinstance(value, bool):
                row[column] = "true" if value else "false"
            elif isinstance(value, str) and len(value) > VALUE_CHARS_MAX:
                # Its head, as an object: the reader quarantines the row (nested_value), so a cut
                # value is never committed as though it were whole.
                row[column] = {"value_too_long": value[:4096]}
                problems.append(
                    (
                        column,
                        "value_too_long",
                        f"{'.'.join(path)} is {len(value)} characters (at most {VALUE_CHARS_MAX})",
                    )
                )
            elif isinstance(value, str | int):
                row[column] = value
            elif isinstance(value, Decimal):
                row[column] = str(value)
            else:
                # Written as it is: the manifest's reader quarantines a row with a nested value,
                # naming the column, so the record is kept and shown, never dropped.
                row[column] = value
                problems.append(
                    (column, "not_a_value", f"{'.'.join(path)} holds a JSON {type(value).__name__}, not a single value")
                )
        return row, problems


class _Run:
    def __init__(self, definition: SourceDefinition, fetcher: Fetcher, window: Window, work: Path) -> None:
        self.d = definition
        self.fetcher = fetcher
        self.window = window
        self.mapper = _Mapper(definition)
        self.records_path = parse_path(definition.records)
        self.pages: list[PageProvenance] = []
        self.errors: list[SyncError] = []
        self.fetched = self.skipped = 0
        self.raw = work.open("wb")
        self.keys: list[str] = []
        self.latest: dict[str, int] = {}
        self.problems: list[tuple[int, str | None, str, str, str]] = []  # (raw index, ...)
        self.problems_total = 0
        self.fatal = False

    def fail(self, request: PageRequest, exc: FetchError | PagingError, *, fatal: bool) -> None:
        message = exc.message if isinstance(exc, FetchError) else str(exc)
        self.errors.append(SyncError(code=exc.code, message=message, page=request.index + 1))
        self.pages.append(
            PageProvenance(url=request.url, cursor=request.cursor, next=None, sha256=None, records=0, error=exc.code)
        )
        self.fatal = self.fatal or fatal

    def take(self, fetched: Fetched, next_cursor: str | None) -> int:
        """Map and spool one page's records; their number. FetchError if it holds no list."""
        records = get_path(fetched.body, self.records_path)
        if records is MISSING:
            raise FetchError("records_missing", f"the response has no {self.d.records!r} (records)")
        if not isinstance(records, list):
            raise FetchError("records_not_list", f"{self.d.records!r} is a JSON {type(records).__name__}, not a list")
        for record in records:
            self._record(record)
        self.fetched += len(records)
        self.pages.append(
            PageProvenance(
                url=fetched.request.url,
                cursor=fetched.request.cursor,
                next=next_cursor,
                sha256=fetched.sha256,
                records=len(records),
            )
        )
        return len(records)

    def _record(self, record: Any) -> None:
        key = self.mapper.key_of(record) if isinstance(record, dict) else None
        value = self.mapper.value_of(record) if isinstance(record, dict) else None
        if key is not None and self.window.already_committed(key, value):
            self.skipped += 1
            return
        index = len(self.keys)
        row, problems = self.mapper.row(record)
        if key is None:
            problems.append((self.d.key, "key_missing", f"the record has no upstream key at {self.d.key!r}"))
            key = f"\x00{index}"  # its own: a record without a key is never taken for another
        else:
            self.window.observe(key, value)
        self.keys.append(key)
        self.latest[key] = index
        for column, rule, message in problems:
            self.problems_total += 1
            if len(self.problems) < PROBLEMS_KEPT:
                self.problems.append((index, None if key.startswith("\x00") else key, column, rule, message))
        self.raw.write(msgspec.json.encode(row) + b"\n")

    async def sequential(self, paginator: Paginator) -> None:
        request: PageRequest | None = paginator.first()
        while request is not None:
            if request.index >= self.d.pages_max:
                self.errors.append(
                    SyncError(code="too_many_pages", message=f"more than {self.d.pages_max} pages (pages_max)")
                )
                self.fatal = True
                return
            try:
                fetched = await self.fetcher.fetch(request)
                following = paginator.after(request, fetched.body, fetched.headers)
                self.take(fetched, None if following is None else (following.cursor or following.url))
            except FetchError as exc:
                self.fail(request, exc, fatal=not exc.transient)
                return
            except PagingError as exc:
                self.fail(request, exc, fatal=True)
                return
            request = following

    async def parallel(self, paginator: Paginator) -> None:
        """Pages asked for ahead, up to max_in_flight, and taken in order: the first short page
        is the last, and the pages asked for past it are dropped unread."""
        pending: dict[int, asyncio.Task[Fetched]] = {}
        ahead = 0
        try:
            while True:
                while len(pending) < self.d.max_in_flight and ahead < self.d.pages_max:
                    pending[ahead] = asyncio.create_task(self.fetcher.fetch(paginator.nth(ahead)))
                    ahead += 1
                if not pending:
                    self.errors.append(
                        SyncError(code="too_many_pages", message=f"more than {self.d.pages_max} pages (pages_max)")
                    )
                    self.fatal = True
                    return
                index = min(pending)
                request = paginator.nth(index)
                try:
                    fetched = await pending.pop(index)
                    last = False
                    records = get_path(fetched.body, self.records_path)
                    if isinstance(records, list):
                        last = paginator.is_last(len(records))
                    self.take(fetched, None if last else paginator.nth(index + 1).cursor)
                except FetchError as exc:
                    self.fail(request, exc, fatal=not exc.transient)
                    return
                if last:
                    return
        finally:
            for task in pending.values():
                task.cancel()
            for task in pending.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def write_manifest(self, path: Path) -> tuple[int, str, int, list[RecordProblem]]:
        """The second pass: the last row of each upstream key, where it was last read."""
        self.raw.close()
        rows = 0
        digest = hashlib.sha256()
        row_of: dict[int, int] = {}
        with open(self.raw.name, "rb") as raw, path.open("wb") as out:
            for index, line in enumerate(raw):
                key = self.keys[index]
                if self.latest[key] != index:
                    continue
                rows += 1
                row_of[index] = rows
                out.write(line)
                digest.update(line)
            size = out.tell()
        problems = [
            RecordProblem(row=row_of[i], upstream_id=upstream, field=field, rule=rule, message=message)
            for i, upstream, field, rule, message in self.problems
            if i in row_of
        ]
        return rows, digest.hexdigest(), size, problems


async def run_sync(
    definition: SourceDefinition,
    *,
    saved: CursorState | None,
    directory: Path,
    client: httpx.AsyncClient,
    env: Mapping[str, str] | None = None,
    clock: Clock | None = None,
) -> SyncResult:
    """Run one sync, writing its manifest under ``directory`` (created with mode 0700)."""
    window = Window(saved, definition.incremental.start if definition.incremental else None)
    since = window.since
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # A name of its own for every sync: an id() is reused once its object is freed, and a
    # manifest the last sync of the same source left for its import must not be overwritten.
    unique = uuid.uuid4().hex
    work = directory / f".{definition.name}-{unique}.raw"
    try:
        fetcher = Fetcher(client, definition, env=os.environ if env is None else env, clock=clock)
    except FetchError as exc:
        return _failed(definition, since, [SyncError(code=exc.code, message=exc.message)])
    run = _Run(definition, fetcher, window, work)
    try:
        paginator = paginator_for(definition, since)
        if paginator.parallel:
            await run.parallel(paginator)
        else:
            await run.sequential(paginator)
        if run.fatal or not any(p.error is None for p in run.pages):
            run.raw.close()
            result = _failed(definition, since, run.errors, pages=run.pages)
            result.requests, result.in_flight_max = fetcher.requests, fetcher.in_flight_max
            result.fetched = run.fetched
            return result
        manifest = directory / f"{definition.name}-{unique}.jsonl"
        rows, sha256, size, problems = run.write_manifest(manifest)
        if not rows:  # nothing new upstream: no import to make
            manifest.unlink()
        return SyncResult(
            status="partial" if run.errors else "ok",
            pages=run.pages,
            errors=run.errors,
            problems=problems,
            problems_total=run.problems_total,
            fetched=run.fetched,
            skipped=run.skipped,
            superseded=len(run.keys) - rows,
            records=rows,
            cursor_from=since,
            cursor_to=window.end(complete=not run.errors),
            requests=fetcher.requests,
            in_flight_max=fetcher.in_flight_max,
            manifest=manifest if rows else None,
            manifest_sha256=sha256 if rows else None,
            manifest_bytes=size if rows else 0,
        )
    finally:
        run.raw.close()
        with contextlib.suppress(FileNotFoundError):
            work.unlink()


def remove_leftovers(directory: Path, name: str) -> list[str]:
    """Remove what syncs of source ``name`` left in ``directory`` (their working files and
    manifests, named as ``run_sync`` names them) and say which; for a caller that knows no sync
    of the source is running there, such as a worker holding the source's lock after one was
    killed mid-sync. The files hold mapped upstream rows, which nothing would read again."""
    own = re.compile(rf"\.{re.escape(name)}-[0-9a-f]{{32}}\.raw|{re.escape(name)}-[0-9a-f]{{32}}\.jsonl")
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            if own.fullmatch(path.name):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path.name)
    return sorted(removed)


def _failed(
    definition: SourceDefinition,
    since: str | None,
    errors: list[SyncError],
    *,
    pages: list[PageProvenance] | None = None,
) -> SyncResult:
    return SyncResult(
        status="failed",
        pages=pages or [],
        errors=errors,
        problems=[],
        problems_total=0,
        fetched=0,
        skipped=0,
        superseded=0,
        records=0,
        cursor_from=since,
        cursor_to=None,
        requests=0,
        in_flight_max=0,
    )
