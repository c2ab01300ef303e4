"""The client commands, run against a server over HTTP: `ledger submit` and `ledger checkpoint
pull`. They read no LEDGER_* server setting and open no database (ledger.client does the work;
this module is the arguments, the progress bar and the exit codes)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ledger.cli.offline import UsageError, check_receipt, load_verifiers
from ledger.client.checkpoints import Rejected, pull
from ledger.client.retry import AuthFailed, Refused, Transient, check
from ledger.client.settings import ClientSettings, ConfigError, resolve
from ledger.client.submit import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    Options,
    Outcome,
    Submitter,
    worst,
)
from ledger.core.errors import LedgerError
from ledger.core.note import Verifier

__all__ = ["COMMANDS"]


def _client(settings: ClientSettings, timeout: float = 60.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.server,
        headers={"Authorization": f"Bearer {settings.token}", "User-Agent": "ledger-client"},
        timeout=httpx.Timeout(timeout),
    )


def _say_retries() -> None:
    """One line on stderr per retry, instead of stamina's default structlog/logging lines,
    which would land on stdout, among --json's lines."""
    from stamina.instrumentation import RetryDetails, set_on_retry_hooks

    def note(details: RetryDetails) -> None:
        print(
            f"ledger: retry {details.retry_num} in {details.wait_for:.1f} s after {details.caused_by}",
            file=sys.stderr,
            flush=True,
        )

    set_on_retry_hooks([note])


def _keys(values: list[str] | None) -> list[Verifier]:
    try:
        keys = load_verifiers(values)
    except LedgerError as exc:
        raise UsageError(str(exc)) from exc
    if not keys:
        raise UsageError("--public-key names no key")
    return keys


# ---------------------------------------------------------------------- progress


class _Bars:
    """rich progress bars on a terminal: bytes sent while uploading, then the import's rows
    with the server's rate and ETA."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[note]}"),
        )
        self.tasks: dict[str, Any] = {}

    def _task(self, file: str) -> Any:
        if file not in self.tasks:
            self.tasks[file] = self.progress.add_task(Path(file).name, total=None, note="")
        return self.tasks[file]

    def bytes(self, file: str, sent: int, total: int) -> None:
        self.progress.update(self._task(file), completed=sent, total=total, note="uploading")

    def rows(self, file: str, progress: dict[str, Any]) -> None:
        rate, eta = progress.get("rows_per_second"), progress.get("eta_seconds")
        note = f"{progress.get('status')}: {progress.get('rows_processed', 0):,} rows"
        if rate:
            note += f", {rate:,.0f} rows/s"
        if eta is not None:
            note += f", ETA {eta:,.0f} s"
        # The bar follows the manifest's bytes read by the import; rows, rate and ETA are the server's.
        self.progress.update(
            self._task(file),
            completed=progress.get("bytes_read", 0),
            total=progress.get("manifest_bytes") or None,
            note=note,
        )

    def done(self, outcome: Outcome) -> None:
        self.progress.update(self._task(outcome.file), note=outcome.status)


class _Quiet:
    def bytes(self, file: str, sent: int, total: int) -> None:
        pass

    def rows(self, file: str, progress: dict[str, Any]) -> None:
        pass

    def done(self, outcome: Outcome) -> None:
        pass


@contextmanager
def _reporter(show: bool) -> Iterator[_Bars | _Quiet]:
    if not show:
        yield _Quiet()
        return
    bars = _Bars()
    with bars.progress:
        yield bars


def _line(outcome: Outcome) -> str:
    counts = (
        f"{outcome.rows_total} rows: {outcome.rows_committed} committed, {outcome.rows_duplicate} duplicate,"
        f" {outcome.rows_quarantined} quarantined"
    )
    text = f"{outcome.file}: {outcome.status}" + (f" (task {outcome.task_id})" if outcome.task_id else "")
    if outcome.status not in ("transient_failure", "error"):
        text += f"; {counts}"
    if outcome.receipt:
        text += f"; receipt {outcome.receipt} verified"
    if outcome.error:
        text += f"; error: {outcome.error}"
    return text


# ---------------------------------------------------------------------- submit


def cmd_submit(args: argparse.Namespace) -> int:
    settings = resolve(args.server, args.token)
    _say_retries()
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"not a readable file: {', '.join(missing)}")
    check: Callable[[Path, Path], str] | None = None
    if args.receipt is not None:
        if not args.public_key:
            raise UsageError("--receipt checks each receipt offline: give the pinned key with --public-key")
        if args.no_wait:
            raise UsageError("--receipt needs the import's end: it cannot go with --no-wait")
        verifiers = _keys(args.public_key)

        def check(receipt: Path, manifest: Path) -> str:
            return check_receipt(str(receipt), str(manifest), verifiers).receipt.manifest_sha256

    options = Options(
        chunk_size=args.chunk_size,
        max_wait=float(args.max_wait),
        wait=not args.no_wait,
        dry_run=args.dry_run,
        policy=args.policy,
        lab=args.lab,
        idempotency_key=args.idempotency_key,
        receipt_dir=None if args.receipt is None else Path(args.receipt),
    )

    def emit(outcome: Outcome) -> None:
        print(json.dumps(outcome.as_json()) if args.json else _line(outcome), flush=True)

    async def run() -> list[Outcome]:
        with _reporter(sys.stdout.isatty() and not args.json) as reporter:
            async with _client(settings, options.timeout) as client:
                submitter = Submitter(client, settings.state, options, reporter=reporter, check_receipt=check)
                return await submitter.run(paths, args.parallel, emit)

    try:
        outcomes = asyncio.run(run())
    except KeyboardInterrupt:
        print("ledger submit: interrupted; a re-run resumes the uploads", file=sys.stderr)
        return EXIT_INTERRUPTED
    return worst([o.code for o in outcomes])


# ---------------------------------------------------------------------- pull and connectors


def _pull_line(outcome: Outcome) -> str:
    extra = outcome.extra
    text = _line(outcome)
    if "sync_status" in extra:
        text += (
            f"; sync {extra.get('sync_id', '-')} {extra['sync_status']}: {extra['pages']} pages, "
            f"{extra['records']} records ({extra['skipped']} already committed)"
        )
    return text


def cmd_pull(args: argparse.Namespace) -> int:
    from ledger.connectors.pull import Puller

    settings = resolve(args.server, args.token)
    _say_retries()
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UsageError(f"not a readable file: {', '.join(missing)}")
    options = Options(max_wait=float(args.max_wait), wait=not args.no_wait)

    def emit(outcome: Outcome) -> None:
        if args.json:
            keys = ("sync_id", "sync_status", "pages", "records", "fetched", "skipped", "problems", "errors")
            print(json.dumps({**outcome.as_json(), **{k: outcome.extra.get(k) for k in keys}}), flush=True)
        else:
            print(_pull_line(outcome), flush=True)

    async def run() -> list[Outcome]:
        with _reporter(sys.stdout.isatty() and not args.json) as reporter:
            async with _client(settings, options.timeout) as client, httpx.AsyncClient() as upstream:
                puller = Puller(client, upstream, settings.state, options, reporter=reporter)
                outcomes = []
                # One source after the other: each holds up to its own max_in_flight requests.
                for path in paths:
                    outcome = await puller.pull(path)
                    reporter.done(outcome)
                    emit(outcome)
                    outcomes.append(outcome)
                return outcomes

    try:
        outcomes = asyncio.run(run())
    except KeyboardInterrupt:
        print("ledger pull: interrupted; nothing of an unrecorded sync is kept, run it again", file=sys.stderr)
        return EXIT_INTERRUPTED
    return worst([o.code for o in outcomes])


async def _call(settings: ClientSettings, method: str, url: str, **kw: Any) -> Any:
    async with _client(settings) as client:
        response = await client.request(method, url, **kw)
    ok = (200, 201, 202)
    return check(response, ok=ok).json()


def _api(settings: ClientSettings, method: str, url: str, **kw: Any) -> Any:
    """One request; its failure printed and turned into the exit code (raised as _Exit)."""
    try:
        return asyncio.run(_call(settings, method, url, **kw))
    except AuthFailed as exc:
        raise _Exit(EXIT_AUTH, str(exc)) from None
    except Refused as exc:
        raise _Exit(EXIT_USAGE if exc.status == 422 else EXIT_ERROR, str(exc)) from None
    except (Transient, httpx.HTTPError) as exc:
        raise _Exit(EXIT_ERROR, f"{type(exc).__name__}: {exc}") from None


class _Exit(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def cmd_connector_add(args: argparse.Namespace) -> int:
    from ledger.connectors.definition import DefinitionError
    from ledger.connectors.pull import load_checked

    settings = resolve(args.server, args.token)
    try:
        text, _definition = load_checked(Path(args.file))
    except DefinitionError as exc:
        raise UsageError(str(exc)) from None
    body = _api(settings, "POST", "/connectors", json={"definition": text})
    if args.json:
        print(json.dumps(body))
    else:
        when = f"on schedule {body['schedule']!r}" if body.get("schedule") else "on request only (no schedule)"
        print(f"registered {body['name']} (lab {body['lab']}, {body['url']}); a worker syncs it {when}")
    return EXIT_OK


def cmd_connector_list(args: argparse.Namespace) -> int:
    settings = resolve(args.server, args.token)
    body = _api(settings, "GET", "/connectors")
    if args.json:
        print(json.dumps(body))
        return EXIT_OK
    for c in body:
        last = c.get("last_sync") or {}
        print(
            f"{c['name']}\tlab {c['lab']}\t{c.get('schedule') or 'unscheduled'}\tcursor {c.get('cursor') or '-'}"
            f"\tlast sync {last.get('status', '-')} {last.get('started_at', '')}"
        )
    return EXIT_OK


def cmd_connector_sync(args: argparse.Namespace) -> int:
    settings = resolve(args.server, args.token)
    body = _api(settings, "POST", f"/connectors/{args.name}/syncs")
    print(f"sync of {args.name} queued" if body["queued"] else f"a sync of {args.name} is already queued or running")
    return EXIT_OK


def cmd_connector_syncs(args: argparse.Namespace) -> int:
    settings = resolve(args.server, args.token)
    body = _api(settings, "GET", f"/connectors/{args.name}/syncs", params={"limit": args.limit})
    if args.json:
        print(json.dumps(body))
        return EXIT_OK
    for sync in body:
        errors = "; ".join(f"{e['code']}: {e['message']}" for e in sync["errors"])
        print(
            f"{sync['started_at']}\t{sync['status']}\t{sync['records']} records, {len(sync['pages'])} pages"
            f"\ttask {sync['task_id'] or '-'} {sync['import_status'] or ''}" + (f"\t{errors}" if errors else "")
        )
    return EXIT_OK


# ---------------------------------------------------------------------- checkpoint pull


def cmd_checkpoint_pull(args: argparse.Namespace) -> int:
    settings = resolve(args.server, args.token)
    _say_retries()
    verifiers = _keys(args.public_key)

    async def run() -> Any:
        async with _client(settings) as client:
            return await pull(client, verifiers, settings.state, max_wait=float(args.max_wait))

    try:
        pulled = asyncio.run(run())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except AuthFailed as exc:
        print(f"ledger checkpoint pull: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except (Rejected, LedgerError) as exc:
        print(f"ledger checkpoint pull: REJECTED: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (Refused, Transient, httpx.HTTPError) as exc:
        print(f"ledger checkpoint pull: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(pulled.as_json()))
    else:
        c, old = pulled.checkpoint, pulled.previous
        print(f"verified checkpoint: {c.origin} size {c.size} root {c.root.hex()}")
        if old is None:
            print("first checkpoint kept for this origin and key")
        elif old.size == c.size:
            print("unchanged since the last pull")
        else:
            print(f"consistent: extends the checkpoint of size {old.size} verified before")
    return EXIT_OK


# ---------------------------------------------------------------------- arguments


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[Any, argparse.Namespace], int]:
    def run(_settings: Any, args: argparse.Namespace) -> int:
        try:
            return func(args)
        except (UsageError, ConfigError) as exc:
            print(f"ledger: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except _Exit as exc:
            print(f"ledger: {exc}", file=sys.stderr)
            return exc.code

    return run


# What the argument parser calls (ledger.cli.client_commands declares the commands without
# importing this module, so that the offline commands never load httpx).
COMMANDS: dict[str, Callable[[Any, argparse.Namespace], int]] = {
    "submit": _guarded(cmd_submit),
    "checkpoint_pull": _guarded(cmd_checkpoint_pull),
    "pull": _guarded(cmd_pull),
    "connector_add": _guarded(cmd_connector_add),
    "connector_list": _guarded(cmd_connector_list),
    "connector_sync": _guarded(cmd_connector_sync),
    "connector_syncs": _guarded(cmd_connector_syncs),
}
