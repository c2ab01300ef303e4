"""`ledger submit`: deliver manifest files to the server and follow their imports.

Each file goes through tus (/uploads/) in chunks, the upload's URL kept in a state file keyed
by server, sha256 and size, so a run killed at any point is resumed by the next one from the
offset the server holds: at most the chunk in flight is sent again. A server without tus gets
POST /imports instead. The Idempotency-Key is the file's sha256 by default, so a retry after a
lost answer never makes a second import. Transient failures (the connection, 5xx, 429) are
retried by stamina (ledger.client.retry says how long to wait); a file that still cannot be
delivered ends ``transient_failure`` and its state file stays for the next run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import httpx
import msgspec
import stamina

from ledger.client.retry import ATTEMPTS, AuthFailed, Backoff, Refused, Transient, check

__all__ = [
    "EXIT_AUTH",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_QUARANTINED",
    "EXIT_USAGE",
    "Options",
    "Outcome",
    "Reporter",
    "Submitter",
    "file_digest",
    "state_key",
    "worst",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_QUARANTINED = 3
EXIT_AUTH = 4
EXIT_PARTIAL = 5  # `ledger pull`: a sync that ended partial (what it read is committed)
EXIT_INTERRUPTED = 130
# The worst first: the exit code of a run is the worst over its files.
_SEVERITY = (EXIT_INTERRUPTED, EXIT_AUTH, EXIT_USAGE, EXIT_ERROR, EXIT_PARTIAL, EXIT_QUARANTINED, EXIT_OK)

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"
_TERMINAL = ("done", "failed", "cancelled")
_READ_BLOCK = 1 << 20


def worst(codes: list[int]) -> int:
    return min(codes, key=_SEVERITY.index) if codes else EXIT_OK


@dataclass(frozen=True)
class Options:
    chunk_size: int = 8 << 20
    max_wait: float = 300.0
    wait: bool = True
    dry_run: bool = False
    policy: str | None = None
    lab: str | None = None
    idempotency_key: str | None = None
    receipt_dir: Path | None = None
    timeout: float = 60.0
    # More form fields of every submission (`ledger pull` names its sync: connector_sync).
    fields: tuple[tuple[str, str], ...] = ()


@dataclass
class Outcome:
    """One file's line of --json, and its exit code."""

    file: str
    task_id: str | None = None
    status: str = "pending"
    rows_total: int = 0
    rows_committed: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0
    error: str | None = None
    receipt: str | None = None
    code: int = EXIT_OK
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "file": self.file,
            "task_id": self.task_id,
            "status": self.status,
            "rows_total": self.rows_total,
            "rows_committed": self.rows_committed,
            "rows_duplicate": self.rows_duplicate,
            "rows_quarantined": self.rows_quarantined,
            "error": self.error,
        }
        if self.receipt is not None:
            body["receipt"] = self.receipt
        return body


class Reporter(Protocol):
    """Where progress goes (a rich progress bar on a terminal, nothing otherwise)."""

    def bytes(self, file: str, sent: int, total: int) -> None: ...
    def rows(self, file: str, progress: dict[str, Any]) -> None: ...
    def done(self, outcome: Outcome) -> None: ...


class Silent:
    def bytes(self, file: str, sent: int, total: int) -> None:
        pass

    def rows(self, file: str, progress: dict[str, Any]) -> None:
        pass

    def done(self, outcome: Outcome) -> None:
        pass


def file_digest(path: Path) -> tuple[str, int]:
    """The file's sha256 (hex) and size, read a block at a time (memory flat in file size)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_READ_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def state_key(server: str, sha256: str, size: int, dry_run: bool) -> str:
    # A dry run is another submission of the same bytes: it must not resume the real one.
    return hashlib.sha256(f"{server}\n{sha256}\n{size}\n{int(dry_run)}".encode()).hexdigest()[:32]


def _metadata(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


class StateFile:
    """One small JSON file per submission under $XDG_STATE_HOME/ledger/uploads: the upload's
    URL once created, so a later run resumes it. Written whole and renamed into place, so a
    kill leaves the old file or the new one, never half of one."""

    def __init__(self, directory: Path, key: str) -> None:
        self.path = directory / "uploads" / f"{key}.json"

    def load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = self.path.with_suffix(f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        os.replace(temp, self.path)

    def drop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class Submitter:
    """Submits files to one server with one token, ``parallel`` files at a time."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        state_dir: Path,
        options: Options,
        *,
        reporter: Reporter | None = None,
        check_receipt: Callable[[Path, Path], str] | None = None,
    ) -> None:
        self.client = client
        self.server = str(client.base_url).rstrip("/")
        self.state_dir = state_dir
        self.options = options
        self.reporter = reporter or Silent()
        # Checks a saved receipt against its file offline; returns what it verified, raises on failure.
        self.check_receipt = check_receipt
        self._tus: bool | None = None
        self._tus_lock = asyncio.Lock()

    async def run(self, paths: list[Path], parallel: int, emit: Callable[[Outcome], None]) -> list[Outcome]:
        gate = asyncio.Semaphore(parallel)

        async def one(path: Path) -> Outcome:
            async with gate:
                outcome = await self.submit(path)
            self.reporter.done(outcome)
            emit(outcome)
            return outcome

        return list(await asyncio.gather(*(one(p) for p in paths)))

    async def submit(self, path: Path) -> Outcome:
        outcome = Outcome(file=str(path))
        backoff = Backoff(self.options.max_wait)
        try:
            sha256, size = await asyncio.to_thread(file_digest, path)
            key = self.options.idempotency_key or sha256
            if self.options.dry_run and not self.options.idempotency_key:
                key = f"{sha256}-dry-run"
            state = StateFile(self.state_dir, state_key(self.server, sha256, size, self.options.dry_run))
            task_id = await self._retrying(backoff, lambda: self._deliver(path, size, key, state))
            outcome.task_id = task_id
            # Delivered: nothing is left to resume (a re-run finds the import by its key).
            state.drop()
            if not self.options.wait:
                self._fill(outcome, await self._retrying(backoff, lambda: self._status(task_id)))
                return outcome
            self._fill(outcome, await self._retrying(backoff, lambda: self._follow(path, task_id)))
            # A dry run commits nothing, so it has no receipt on the ledger.
            if self.options.receipt_dir is not None and outcome.status == "done" and not self.options.dry_run:
                await self._receipt(path, outcome, backoff)
        except (Transient, httpx.TransportError) as exc:
            outcome.status, outcome.error, outcome.code = "transient_failure", _describe(exc), EXIT_ERROR
        except AuthFailed as exc:
            outcome.status, outcome.error, outcome.code = "error", str(exc), EXIT_AUTH
        except (Refused, OSError, ValueError) as exc:
            outcome.status, outcome.error, outcome.code = "error", _describe(exc), EXIT_ERROR
        # What the retries waited (or would have, in stamina's testing mode), not in --json.
        outcome.extra["waits"] = backoff.waits
        return outcome

    async def _retrying(self, backoff: Backoff, step: Callable[[], Awaitable[Any]]) -> Any:
        async for attempt in stamina.retry_context(on=backoff, attempts=ATTEMPTS, timeout=None):
            with attempt:
                return await step()
        raise AssertionError("stamina ends with the last error")  # pragma: no cover

    # ------------------------------------------------------------------ delivery

    async def _uses_tus(self) -> bool:
        async with self._tus_lock:
            if self._tus is None:
                response = await self.client.options("/uploads/", headers=TUS)
                if response.status_code >= 500 or response.status_code == 429:
                    check(response)  # transient: ask again on the next attempt
                versions = response.headers.get("Tus-Version", "")
                self._tus = response.status_code in (200, 204) and "1.0.0" in versions.split(",")
            return self._tus

    async def _deliver(self, path: Path, size: int, key: str, state: StateFile) -> str:
        if await self._uses_tus():
            return await self._tus_upload(path, size, key, state)
        return await self._post(path, key)

    def _fields(self, path: Path) -> dict[str, str]:
        fields = {"filename": path.name}
        if self.options.policy:
            fields["policy"] = self.options.policy
        if self.options.lab:
            fields["lab"] = self.options.lab
        if self.options.dry_run:
            fields["dry_run"] = "true"
        fields.update(self.options.fields)
        return fields

    async def _post(self, path: Path, key: str) -> str:
        headers = {"Idempotency-Key": key}
        with path.open("rb") as f:
            response = await self.client.post(
                "/imports",
                headers=headers,
                data={k: v for k, v in self._fields(path).items() if k != "filename"},
                files={"file": (path.name, f, "application/octet-stream")},
            )
        self.reporter.bytes(str(path), path.stat().st_size, path.stat().st_size)
        task_id: str = check(response).json()["task_id"]
        return task_id

    async def _tus_upload(self, path: Path, size: int, key: str, state: StateFile) -> str:
        saved = state.load()
        url = saved.get("upload_url") if saved.get("server") == self.server else None
        offset = 0
        if isinstance(url, str):
            head = await self.client.head(url, headers=TUS)
            if head.status_code in (404, 410):
                url = None  # expired or terminated: start over
            else:
                check(head, ok=(200,))
                if imported := head.headers.get("Ledger-Import"):
                    return _task_id(imported)
                offset = int(head.headers["Upload-Offset"])
        if not isinstance(url, str):
            fields = {**self._fields(path), "idempotency_key": key}
            created = check(
                await self.client.post(
                    "/uploads/", headers={**TUS, "Upload-Length": str(size), "Upload-Metadata": _metadata(fields)}
                ),
                ok=(201,),
            )
            url = urljoin(self.server + "/uploads/", created.headers["Location"])
            # Kept before the first byte is sent: from here on, a kill loses no more than a chunk.
            state.save({"server": self.server, "file": str(path), "upload_url": url, "idempotency_key": key})
            if imported := created.headers.get("Ledger-Import"):
                return _task_id(imported)
        self.reporter.bytes(str(path), offset, size)
        with path.open("rb") as f:
            while True:
                f.seek(offset)
                chunk = f.read(self.options.chunk_size)
                checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
                response = await self.client.patch(
                    url,
                    # As a stream of one piece: httpx's request and response refer to each other,
                    # so a body given as bytes lives until a full garbage collection, and the
                    # client's memory grew with the file (185 MB for 296 MB; flat at 73 MB now).
                    content=_once(chunk),
                    headers={
                        **TUS,
                        "Content-Length": str(len(chunk)),
                        "Upload-Offset": str(offset),
                        "Content-Type": OFFSET_STREAM,
                        # The server drops a chunk that arrived damaged or cut short rather
                        # than keep part of it; the retry then sends it whole.
                        "Upload-Checksum": f"sha256 {checksum}",
                    },
                )
                if response.status_code == 409:
                    # Another offset than ours (an earlier PATCH got further than we heard):
                    # the server's HEAD says where to go on from.
                    raise Transient("the upload's offset moved; resuming from the server's", retry_after=0)
                check(response, ok=(204,))
                offset = int(response.headers["Upload-Offset"])
                self.reporter.bytes(str(path), offset, size)
                if imported := response.headers.get("Ledger-Import"):
                    return _task_id(imported)
                if offset >= size:
                    raise Refused("the upload is whole but the server named no import", 500)

    # ------------------------------------------------------------------ the import

    async def _status(self, task_id: str) -> dict[str, Any]:
        body: dict[str, Any] = check(await self.client.get(f"/imports/{task_id}")).json()
        return body

    async def _follow(self, path: Path, task_id: str) -> dict[str, Any]:
        """The import's final status, watched through its event stream until it ends."""
        async with self.client.stream(
            "GET", f"/imports/{task_id}/events", headers={"Accept": "text/event-stream"}, timeout=self.options.timeout
        ) as response:
            if response.status_code not in (200, 409):
                await response.aread()
                check(response)
            if response.status_code == 200:
                async for _event, data in _events(response.aiter_lines()):
                    self.reporter.rows(str(path), data)
        status = await self._status(task_id)
        if status.get("status") not in _TERMINAL:
            # The stream ended before the import did (a proxy's timeout, a restart): again.
            raise Transient("the event stream ended before the import", retry_after=0)
        return status

    async def _receipt(self, path: Path, outcome: Outcome, backoff: Backoff) -> None:
        assert self.options.receipt_dir is not None and outcome.task_id is not None
        task_id = outcome.task_id

        async def fetch() -> bytes:
            return check(await self.client.get(f"/imports/{task_id}/receipt")).content

        body = await self._retrying(backoff, fetch)
        target = self.options.receipt_dir / f"{task_id}.receipt.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        outcome.receipt = str(target)
        if self.check_receipt is not None:
            try:
                self.check_receipt(target, path)
            except Exception as exc:  # whatever the check says is wrong, the receipt is not good
                outcome.status, outcome.error, outcome.code = "receipt_invalid", str(exc), EXIT_ERROR

    def _fill(self, outcome: Outcome, status: dict[str, Any]) -> None:
        outcome.status = str(status.get("status"))
        for name in ("rows_total", "rows_committed", "rows_duplicate", "rows_quarantined"):
            setattr(outcome, name, int(status.get(name) or 0))
        error = status.get("error")
        if error:
            outcome.error = str(error.get("message") or error) if isinstance(error, dict) else str(error)
        if outcome.status in ("failed", "cancelled"):
            outcome.code = EXIT_ERROR
        elif outcome.status == "done" and outcome.rows_quarantined:
            outcome.code = EXIT_QUARANTINED
        else:
            outcome.code = EXIT_OK


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a text/event-stream (the WHATWG rules this server's stream needs)."""
    event, data = "message", list[str]()
    async for line in lines:
        if not line:
            if data:
                decoded: Any = None
                with contextlib.suppress(msgspec.DecodeError):  # a line we cannot read is skipped
                    decoded = msgspec.json.decode("\n".join(data))
                if isinstance(decoded, dict):
                    yield event, decoded
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))


def _task_id(import_url: str) -> str:
    # Ledger-Import names the import as "/imports/{task_id}".
    return import_url.rstrip("/").rsplit("/", 1)[1]


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if isinstance(exc, httpx.TransportError) or not text else text
