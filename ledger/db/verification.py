"""Full verification of the stored ledger: every record hash, batch root, chain link and
receipt recomputed from the stored bytes (ledger.core.verify does the checking), then the
stored tree state and every signed checkpoint against the batch headers
(ledger.core.stored_tree, docs/ledger-format.md §6.2)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from ledger.core import records
from ledger.core.failures import Failure
from ledger.core.stored_tree import TreeCheck
from ledger.core.verify import ChainVerifier, StoredBatch, StoredEntry, VerifyReport
from ledger.db.batches import HEADER_COLUMNS, header_of
from ledger.db.checkpoints import registered_verifiers, stored_checkpoint_states
from ledger.db.pool import Conn
from ledger.db.quarantine import index_leaves as quarantine_index_leaves
from ledger.db.stored_outcomes import IMPORT_OUTCOMES, stored_outcomes

__all__ = ["verify_ledger"]


# Below this many records one process verifies; above, ranges of the chain are verified by
# several processes at once (the hashing is CPU-bound Python).
PARALLEL_RECORDS_MIN = 200_000


async def verify_ledger(conn: Conn, *, database_url: str | None = None, workers: int = 1) -> VerifyReport:
    """Recompute every record hash, batch root, chain link and receipt from the stored rows.

    With ``database_url`` and ``workers`` > 1, a large ledger is split after receipt batches
    into ranges verified by separate processes, all reading the same snapshot; the reports
    are joined in chain order, so the first failure is the same one a single pass finds.
    """
    report: VerifyReport | None = None
    if workers > 1 and database_url is not None:
        total = await conn.fetchval("SELECT coalesce(sum(records), 0) FROM ledger_batches")
        if total >= PARALLEL_RECORDS_MIN:
            report = await _verify_parallel(conn, database_url, workers)
    if report is None:
        report = await _verify_range(conn, ChainVerifier(), 1, None, None)
    report = await _check_no_stray_entries(conn, report)
    if not report.ok:
        return report
    return _failed(report, await _check_tree(conn))


def _failed(report: VerifyReport, failure: Failure | None) -> VerifyReport:
    return report if failure is None else msgspec.structs.replace(report, ok=False, first_failure=failure)


async def _check_tree(conn: Conn) -> Failure | None:
    """§6.2: every stored tree leaf and checkpoint against the headers, in seq order; one
    header, leaf and root per batch, so cheap next to the records. A rewrite that recomputed
    every hash of the chain still meets the checkpoints signed before it here."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        check = TreeCheck(await registered_verifiers(conn))
        checkpoints = await stored_checkpoint_states(conn)
        at = 0
        while at < len(checkpoints) and checkpoints[at].tree_size == 0:
            if failure := check.checkpoint(checkpoints[at]):
                return failure
            at += 1
        batches = conn.cursor(
            f"""
            SELECT {", ".join(f"b.{c}" for c in HEADER_COLUMNS.split(", "))}, t.leaf_hash
            FROM ledger_batches b LEFT JOIN batch_tree t ON t.seq = b.seq ORDER BY b.seq
            """,
            prefetch=1000,
        )
        async for b in batches:
            leaf = b["leaf_hash"]
            if failure := check.batch(header_of(b), None if leaf is None else bytes(leaf)):
                return failure
            while at < len(checkpoints) and checkpoints[at].tree_size == b["seq"]:
                if failure := check.checkpoint(checkpoints[at]):
                    return failure
                at += 1
        # A checkpoint beyond the chain's last batch (or between two that are not consecutive).
        return check.checkpoint(checkpoints[at]) if at < len(checkpoints) else None


async def _check_no_stray_entries(conn: Conn, report: VerifyReport) -> VerifyReport:
    """Entries are read batch by batch along the chain, so one naming a batch the chain does
    not have would never be read; no foreign key stops its insertion (they were dropped from
    the bulk path), so look for it: one index range probe past the batches checked.

    This runs after the chain's snapshot: a commit since then has linked batches past the last
    one checked, with their entries. Those name a batch that exists (the next verification
    checks them); only an entry naming no batch at all is stray. Before, an import committing
    during a verification made it report the ledger tampered (entry_outside_chain)."""
    if not report.ok:
        return report
    stray = await conn.fetchrow(
        """
        SELECT e.batch_seq, e.idx FROM ledger_entries e
        WHERE (e.batch_seq < 1 OR e.batch_seq > $1)
          AND NOT EXISTS (SELECT 1 FROM ledger_batches b WHERE b.seq = e.batch_seq)
        ORDER BY e.batch_seq, e.idx LIMIT 1
        """,
        report.batches_checked,
    )
    if stray is None:
        return report
    return _failed(
        report,
        Failure(
            stray["batch_seq"],
            stray["idx"],
            "entry_outside_chain",
            f"an entry names batch {stray['batch_seq']}, which the chain "
            f"(batches 1..{report.batches_checked}) does not have",
        ),
    )


async def _verify_range(
    conn: Conn, verifier: ChainVerifier, first_seq: int, last_seq: int | None, snapshot: str | None
) -> VerifyReport:
    """Reading runs a batch ahead of checking: the next batch's query is in flight (the server
    works on it) while this process hashes the current one."""
    queue: asyncio.Queue[StoredBatch | None] = asyncio.Queue(maxsize=2)
    stop = asyncio.Event()

    async def read() -> None:
        batches = _stored_batches(conn, first_seq, last_seq, snapshot)
        try:
            async for batch in batches:
                await queue.put(batch)
                if stop.is_set():
                    break
        finally:
            # Close the generator here, ending its transaction before the connection is used
            # again (left to the garbage collector, the rollback would race the next query).
            await batches.aclose()
            await queue.put(None)

    reader = asyncio.create_task(read())
    try:
        while (batch := await queue.get()) is not None:
            if verifier.feed(batch) is not None:
                stop.set()
                break
        # Let the reader finish its transaction cleanly rather than cancel it mid-query.
        while batch is not None:
            batch = await queue.get()
    finally:
        await reader
    return verifier.report()


def _verify_range_process(url: str, snapshot: str, first_seq: int, last_seq: int, prev: bytes) -> bytes:
    """Runs in a worker process: one range of the chain, on the exporter's snapshot."""
    from ledger.db.pool import connect

    async def run() -> VerifyReport:
        conn = await connect(url)
        try:
            verifier = ChainVerifier(first_seq=first_seq, prev=prev)
            return await _verify_range(conn, verifier, first_seq, last_seq, snapshot)
        finally:
            await conn.close()

    return msgspec.json.encode(asyncio.run(run()))


def _split(batches: list[Any], parts: int) -> list[tuple[int, int, bytes]]:
    """(first seq, last seq, chain hash before first) ranges of about equal records, each
    ending with a receipt batch (or the head), so no import spans two ranges."""
    total = sum(b["records"] for b in batches)
    target = total / parts
    ranges: list[tuple[int, int, bytes]] = []
    first, prev, acc = 1, records.GENESIS_PREV, 0
    for i, b in enumerate(batches):
        acc += b["records"]
        last = i == len(batches) - 1
        if last or (b["kind"] == "receipt" and acc >= target and len(ranges) < parts - 1):
            # A range starts at the seq after the previous range's last batch, not at the next
            # stored one: a deleted batch at a boundary is still reported as missing.
            ranges.append((first, b["seq"], prev))
            first, prev, acc = b["seq"] + 1, bytes(b["chain_hash"]), 0
    return ranges


async def _verify_parallel(conn: Conn, url: str, workers: int) -> VerifyReport:
    import concurrent.futures
    import multiprocessing

    async with conn.transaction(isolation="repeatable_read", readonly=True):
        snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        batches = await conn.fetch("SELECT seq, kind, records, chain_hash FROM ledger_batches ORDER BY seq")
        ranges = _split(batches, workers)
        loop = asyncio.get_running_loop()
        # spawn: a fork of a process running an event loop and a pool is not safe.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            results = await asyncio.gather(
                *(loop.run_in_executor(pool, _verify_range_process, url, snapshot, a, b, p) for a, b, p in ranges)
            )
    checked_batches = checked_records = 0
    for raw in results:
        report = msgspec.json.decode(raw, type=VerifyReport)
        checked_batches += report.batches_checked
        checked_records += report.records_checked
        if not report.ok:
            return VerifyReport(
                ok=False,
                batches_checked=checked_batches,
                records_checked=checked_records,
                first_failure=report.first_failure,
            )
    return VerifyReport(ok=True, batches_checked=checked_batches, records_checked=checked_records, first_failure=None)


class _ImportRows:
    """One import's row outcomes, read once (not once per batch): its asset batches compare
    with consecutive slices of the committed record hashes, its receipt with all outcomes."""

    __slots__ = ("committed", "outcomes", "position")

    def __init__(self, rows: list[Any]) -> None:
        self.committed, self.outcomes = stored_outcomes(rows)
        self.position = 0

    def next_committed(self, count: int) -> list[bytes]:
        start = self.position
        self.position += count
        return self.committed[start : self.position]


async def _import_rows(conn: Conn, import_id: uuid.UUID) -> _ImportRows:
    return _ImportRows(await conn.fetch(IMPORT_OUTCOMES, import_id))


async def _stored_batches(
    conn: Conn, first_seq: int = 1, last_seq: int | None = None, snapshot: str | None = None
) -> AsyncGenerator[StoredBatch, None]:
    # Per import: its outcomes, and how many committed rows its asset batches have matched.
    imports: dict[uuid.UUID, _ImportRows] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if snapshot is not None:
            await conn.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        batches = conn.cursor(
            f"""
            SELECT {HEADER_COLUMNS}, chain_hash, import_id
            FROM ledger_batches WHERE seq >= $1 AND ($2::bigint IS NULL OR seq <= $2) ORDER BY seq
            """,
            first_seq,
            last_seq,
            prefetch=100,
        )
        async for b in batches:
            header = header_of(b)
            entries = [
                StoredEntry(idx=e[0], record=bytes(e[1]), leaf_hash=bytes(e[2]))
                for e in await conn.fetch(
                    "SELECT idx, record, leaf_hash FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx",
                    b["seq"],
                )
            ]
            expected: list[bytes] | None = None
            outcomes: list[bytes] | None = None
            import_id = b["import_id"]
            if b["kind"] in ("assets", "receipt") and import_id is not None and import_id not in imports:
                imports[import_id] = await _import_rows(conn, import_id)
            if b["kind"] == "assets" and import_id is not None:
                expected = imports[import_id].next_committed(b["records"])
            elif b["kind"] == "receipt" and import_id is not None:
                outcomes = imports.pop(import_id).outcomes
            elif b["kind"] == "review":
                # The review index keeps each entry's leaf hash: a rewritten entry is localised.
                expected = await quarantine_index_leaves(conn, b["seq"])
            yield StoredBatch(
                header=header,
                chain_hash=bytes(b["chain_hash"]),
                entries=entries,
                expected_leaves=expected,
                outcomes=outcomes,
            )
