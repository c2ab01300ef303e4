"""Where the CPU work of staging runs: inline, or fanned out over processes.

Parsing is cheap next to validation and hashing, so every process reads the whole manifest
itself and stages only its share of the chunks (chunk ``i`` goes to process ``i % n``).
Nothing but finished COPY payloads crosses a process boundary: no parsed row is pickled,
and the result does not depend on the reader. Chunks come back in manifest order, each
from a bounded queue, so a slow database holds the processes back instead of filling
memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import queue
from collections.abc import AsyncGenerator, Generator, Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ledger.core.policy import ManifestRefused
from ledger.ingest.errors import ManifestError
from ledger.ingest.formats import ReadOptions, open_manifest
from ledger.ingest.staged_rows import stage_copy

__all__ = ["StageJob", "StagedChunk", "StagerCrashed", "staged_chunks"]

# Finished chunks a process may hold before the database catches up (memory bound).
_QUEUE_CHUNKS = 2
# How often a blocked process checks that its parent is still alive.
_PARENT_POLL_SECONDS = 1.0


class StageJob(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a staging process needs: plain data, so it crosses a spawn."""

    import_id: str
    lab: str
    path: str
    options: dict[str, Any]
    policies_dir: str
    policy_name: str
    policy_sha256: str
    after_row: int  # rows up to this one are already staged (resume)
    chunk_rows: int


class StagedChunk(msgspec.Struct, frozen=True, kw_only=True):
    payload: bytes  # binary COPY data for import_staging
    rows: int
    quarantined: int
    last_row: int
    bytes_read: int


class StagerCrashed(Exception):
    """A staging process died or failed for a reason that is not the manifest's fault."""


def _chunks(records: Iterable[Any], after_row: int, size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for record in records:
        if record.row <= after_row:
            continue
        chunk.append(record)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _produce(job: StageJob, share: int, shares: int) -> Generator[StagedChunk, None, None]:
    """Stage chunks ``share``, ``share + shares``, ... of the manifest past ``job.after_row``."""
    import uuid

    from ledger.core.policy.registry import PolicyRegistry

    policy = PolicyRegistry.load_dir(Path(job.policies_dir)).get(job.policy_name)
    if policy.sha256 != job.policy_sha256:
        raise ManifestError("policy_changed", f"policy {job.policy_name!r} changed while the import ran")
    import_id = uuid.UUID(job.import_id)
    reader = open_manifest(Path(job.path), msgspec.convert(job.options, ReadOptions))
    try:
        binding = policy.bind_header(reader.header)
        for i, chunk in enumerate(_chunks(reader, job.after_row, job.chunk_rows)):
            if i % shares != share:
                continue
            staged = stage_copy(import_id, job.lab, policy, binding, chunk)
            yield StagedChunk(
                payload=staged.payload,
                rows=staged.rows,
                quarantined=staged.quarantined,
                last_row=chunk[-1].row,
                bytes_read=reader.bytes_read,
            )
    finally:
        reader.close()


def _put(out: Any, item: Any, parent: int) -> None:
    """Put, but give up once the parent is gone (killed): never linger as an orphan."""
    while True:
        try:
            out.put(item, timeout=_PARENT_POLL_SECONDS)
            return
        except queue.Full:
            if os.getppid() != parent:
                # Not SystemExit: a normal exit would wait to flush the queue into a pipe
                # nobody reads any more, forever.
                os._exit(1)


def _process_main(job: StageJob, share: int, shares: int, out: Any, parent: int) -> None:
    # Staging allocates millions of short-lived containers that refcounting frees; the cyclic
    # collector only rescans what is alive: with the default threshold it ran every 700
    # allocations and cost about a third of parsing and validation. Freeze what import left
    # behind and collect far less often (a chunk's garbage holds no cycles).
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        for chunk in _produce(job, share, shares):
            _put(out, ("chunk", chunk), parent)
        _put(out, ("end", None), parent)
    except ManifestError as exc:
        _put(out, ("manifest_error", (exc.code, exc.message, exc.row)), parent)
    except ManifestRefused as exc:
        _put(out, ("manifest_error", (exc.code, str(exc), None)), parent)
    except Exception as exc:  # reported to the parent, which fails the import with a code
        _put(out, ("crash", f"{type(exc).__name__}: {exc}"), parent)


async def staged_chunks(job: StageJob, processes: int) -> AsyncGenerator[StagedChunk, None]:
    """Staged chunks in manifest order; ``processes`` 0 stages in this process (in a thread,
    so the event loop stays free for heartbeats and cancels)."""
    if processes <= 0:
        gen = _produce(job, 0, 1)
        try:
            while (chunk := await asyncio.to_thread(next, gen, None)) is not None:
                yield chunk
        finally:
            # If we were cancelled while a thread is inside next(), the generator is still
            # running there; it is dropped with the thread's result instead.
            with contextlib.suppress(ValueError):
                gen.close()
        return
    ctx = multiprocessing.get_context("spawn")
    queues = [ctx.Queue(maxsize=_QUEUE_CHUNKS) for _ in range(processes)]
    procs = [
        ctx.Process(
            target=_process_main,
            args=(job, share, processes, queues[share], os.getpid()),
            name=f"ledger-stager-{share}",
            daemon=True,
        )
        for share in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        index = 0
        while True:
            share = index % processes
            kind, value = await _get(queues[share], procs[share])
            if kind == "end":
                return
            if kind == "manifest_error":
                code, message, row = value
                raise ManifestError(code, message, row=row)
            if kind == "crash":
                raise StagerCrashed(value)
            yield value
            index += 1
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        for proc in procs:
            await asyncio.to_thread(proc.join, 5)
        for q in queues:
            q.close()
            with contextlib.suppress(Exception):
                q.cancel_join_thread()


async def _get(q: Any, proc: Any) -> tuple[str, Any]:
    while True:
        try:
            item: tuple[str, Any] = await asyncio.to_thread(q.get, True, 0.5)
            return item
        except queue.Empty:
            if not proc.is_alive():
                # Its last words may have landed just after the timeout.
                with contextlib.suppress(queue.Empty):
                    last: tuple[str, Any] = q.get(True, 0.2)
                    return last
                raise StagerCrashed(f"staging process {proc.name} exited with code {proc.exitcode}") from None
