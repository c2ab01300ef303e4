"""The append-only store: one transaction turns a staged, decided import into ledger batches.

Record hashes were computed by the worker before this runs, and the decisions taken just
before the final transaction (ledger.db.decisions). Under the head lock we only insert with
set-based SQL and link the chain; the batch roots and the outcomes root are folded from
precomputed leaf hashes meanwhile, on a second connection when there is one. Nothing here is
per row except streaming leaf hashes through Python. The current-state projection (assets)
is not written here: ledger.db.projection applies the committed batches after this
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ledger.core import merkle, records
from ledger.core.errors import LedgerError
from ledger.core.hashing import leaf_hash
from ledger.db import chain, decisions
from ledger.db.pool import Conn

__all__ = [
    "FinalizeResult",
    "ImportAlreadyFinished",
    "ImportCancelled",
    "ImportContext",
    "SideConnection",
    "finalize_import",
    "outcome_bytes",
]

# Rows fetched per round trip when streaming hashes out of a cursor.
_FETCH_ROWS = 10_000

# Where a second connection comes from: a pool's ``acquire``, say.
SideConnection = Callable[[], AbstractAsyncContextManager[Conn]]


class ImportCancelled(Exception):
    """The import was cancelled before its final transaction committed."""


class ImportAlreadyFinished(Exception):
    """Another run of the same import finished it first: this run must change nothing."""


class ImportContext(msgspec.Struct, frozen=True, kw_only=True):
    import_id: uuid.UUID
    lab: str
    policy_name: str
    policy_version: str
    policy_sha256: str
    manifest_sha256: str
    dry_run: bool
    staged_rows: int = 0  # rows in staging; picks the plan guard (decisions.set_based)


class FinalizeResult(msgspec.Struct, frozen=True, kw_only=True):
    rows_total: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    batches: list[tuple[int, bytes]]  # (seq, batch_hash) of the asset batches
    timings: dict[str, float] = {}  # seconds per step, for the logs


class _Steps:
    """Wall time of each step of the final transaction."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self._t = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.timings[step] = round(now - self._t, 3)
        self._t = now


# The entries of the committed rows. The current-state rows are applied after the commit
# (ledger.db.projection), not here under the head lock.
_INSERT_ENTRIES = """
INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, asset_id, grant_code,
                            revision, import_id, row_no)
SELECT $2 + d.ord / $3, d.ord % $3, 'asset', s.record, s.leaf_hash, s.asset_id, s.grant_code,
       d.revision, $1, s.row_no
FROM import_decisions d
JOIN import_staging s ON s.import_id = $1 AND s.row_no = d.row_no
WHERE d.import_id = $1 AND d.decision = 'commit'
"""

# Row outcomes of the valid rows, from the decisions alone (narrow: no staged record read).
_INSERT_ACCEPTED_ROWS = """
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, revision, record_hash)
SELECT $1, row_no, CASE WHEN decision = 'commit' THEN 'committed' ELSE 'duplicate' END,
       asset_id, grant_code, revision, leaf_hash
FROM import_decisions
WHERE import_id = $1 AND decision <> 'conflict'
"""

_INSERT_QUARANTINED_ROWS = f"""
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, errors, cells)
SELECT $1, q.row_no, 'quarantined', q.asset_id, q.grant_code, q.errors, q.cells
FROM ({decisions.QUARANTINED}) q
"""


# The accepted rows in row order with their outcome leaves, hashed by PostgreSQL: the bytes are
# records.ACCEPTED_OUTCOME_TEMPLATE (the same template the verifier re-encodes them with).
_ACCEPTED_IN_ORDER = """
SELECT row_no, decision = 'commit', leaf_hash,
       sha256('\\x00'::bytea || convert_to(format({template}, CASE WHEN decision = 'commit' THEN 'committed'
                                                          ELSE 'duplicate' END,
                                              encode(leaf_hash, 'hex'), row_no), 'UTF8'))
FROM import_decisions WHERE import_id = $1 AND decision <> 'conflict' ORDER BY row_no
""".format(template="'" + records.ACCEPTED_OUTCOME_TEMPLATE.decode().replace("%d", "%s").replace("'", "''") + "'")

# Read from staging and the decisions, not from import_rows: the pass may run on a connection
# of its own, beside the transaction that writes import_rows.
_QUARANTINED_IN_ORDER = f"SELECT q.row_no, q.errors, q.cells FROM ({decisions.QUARANTINED}) q ORDER BY q.row_no"


async def finalize_import(
    conn: Conn, ctx: ImportContext, *, batch_rows_max: int, side: SideConnection | None = None
) -> FinalizeResult:
    """Decide, commit and account for every staged row of one import, atomically.

    The decisions are taken first, in a transaction of their own (ledger.db.decisions); the
    final transaction then takes the head lock, checks that nothing committed since changed
    them, and writes. With ``side`` (a source of a second connection), the pass that hashes
    batch roots and the outcomes root runs there meanwhile, instead of after the writes.

    A dry run classifies against the ledger and records the row outcomes but takes no
    lock and writes no batch, entry, receipt or asset.
    """
    steps = _Steps()
    import_id = ctx.import_id
    _check_status(await conn.fetchval("SELECT status FROM imports WHERE id = $1", import_id), import_id)
    decided_seq = await decisions.decide(conn, import_id, staged_rows=ctx.staged_rows)
    steps.done("decide")
    hashes = not ctx.dry_run
    tally_task: asyncio.Task[_Tally] | None = None
    if side is not None:
        tally_task = asyncio.create_task(_side_pass(side, import_id, batch_rows_max, hashes=hashes))
    try:
        async with conn.transaction():
            # Locking the import row first makes a concurrent cancel wait for us, or us see it.
            status = await conn.fetchval("SELECT status FROM imports WHERE id = $1 FOR UPDATE", import_id)
            _check_status(status, import_id)
            head: chain.Head | None = None
            if not ctx.dry_run:
                # The head lock serialises linking, and makes the decisions final: nothing
                # that could change them commits until this transaction does.
                head = await chain.lock_head(conn)
            steps.done("lock")
            if head is not None and await decisions.stale(conn, import_id, decided_seq, staged_rows=ctx.staged_rows):
                # Rare: a batch committed since the snapshot touched one of our keys.
                await _drop(tally_task)
                tally_task = None
                await decisions.redecide(conn, import_id, staged_rows=ctx.staged_rows)
                steps.done("redecide")
            await conn.execute(_INSERT_ACCEPTED_ROWS, import_id)
            await conn.execute(_INSERT_QUARANTINED_ROWS, import_id)
            steps.done("row_outcomes")
            if head is not None:
                # Entries need only where the import's batches start; their roots come later.
                async with decisions.set_based(conn, ctx.staged_rows):
                    await conn.execute(_INSERT_ENTRIES, import_id, head.seq + 1, batch_rows_max)
                steps.done("entries")
            if tally_task is not None:
                tally = await tally_task
            else:
                await conn.execute("SELECT set_config('work_mem', $1, true)", decisions.WORK_MEM)
                tally = await _outcome_pass(conn, import_id, batch_rows_max, hashes=hashes)
            counts = tally.counts
            steps.done("outcome_pass")
            batches: list[tuple[int, bytes]] = []
            if head is not None:
                head, batches = await _link(conn, head, ctx, tally)
            # clock_timestamp(), not now(): now() is when this transaction began, before
            # everything it writes, and the import's duration (its rows/s, the final step's
            # cost its successors' ETAs learn from) runs to here.
            await conn.execute(
                """
                UPDATE imports SET status = 'done', finished_at = clock_timestamp(), error = NULL,
                       rows_total = $2, rows_committed = $3, rows_duplicate = $4, rows_quarantined = $5
                WHERE id = $1
                """,
                import_id,
                counts["total"],
                counts["committed"],
                counts["duplicate"],
                counts["quarantined"],
            )
        steps.done("commit")
    finally:
        await _drop(tally_task)
    # Working state, after the commit: it is not the ledger, and what a failure or a crash here
    # leaves behind, the next worker start sweeps (decisions.sweep_finished). The import is done.
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await decisions.discard_working_rows(conn, import_id)
    steps.done("cleanup")
    return FinalizeResult(
        rows_total=counts["total"],
        rows_committed=counts["committed"],
        rows_duplicate=counts["duplicate"],
        rows_quarantined=counts["quarantined"],
        batches=batches,
        timings=steps.timings,
    )


def _check_status(status: str | None, import_id: uuid.UUID) -> None:
    if status == "cancelled":
        raise ImportCancelled(str(import_id))
    if status in ("done", "failed"):
        raise ImportAlreadyFinished(str(import_id))


async def _side_pass(side: SideConnection, import_id: uuid.UUID, batch_rows_max: int, *, hashes: bool) -> _Tally:
    async with side() as conn, conn.transaction(readonly=True):
        # The pass sorts the whole import: in memory.
        await conn.execute("SELECT set_config('work_mem', $1, true)", decisions.WORK_MEM)
        return await _outcome_pass(conn, import_id, batch_rows_max, hashes=hashes)


async def _drop(task: asyncio.Task[_Tally] | None) -> None:
    """Stop a side pass whose result will not be used, and wait until it has stopped."""
    if task is not None and not task.done():
        task.cancel()
    if task is not None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def _link(
    conn: Conn, head: chain.Head, ctx: ImportContext, tally: _Tally
) -> tuple[chain.Head, list[tuple[int, bytes]]]:
    """Append the import's asset batches and its receipt to the chain, and move the head."""
    now = datetime.now(UTC)
    first_seq = head.seq + 1
    asset_roots = tally.batch_roots
    head = await chain.append_batches(conn, head, [_batch("assets", r, n, ctx) for r, n in asset_roots], now)
    batches = [(first_seq + i, r) for i, (r, _) in enumerate(asset_roots)]
    counts = tally.counts
    receipt = records.receipt_record(
        task_id=str(ctx.import_id),
        lab=ctx.lab,
        manifest_sha256=ctx.manifest_sha256,
        policy_name=ctx.policy_name,
        policy_version=ctx.policy_version,
        policy_sha256=ctx.policy_sha256,
        rows_total=counts["total"],
        rows_committed=counts["committed"],
        rows_duplicate=counts["duplicate"],
        rows_quarantined=counts["quarantined"],
        outcomes_root=tally.outcomes_root.hex(),
        batches=[(s, h.hex()) for s, h in batches],
    )
    receipt_leaf = leaf_hash(receipt)
    head = await chain.append_batches(conn, head, [_batch("receipt", merkle.root([receipt_leaf]), 1, ctx)], now)
    await conn.execute(
        """
        INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, import_id)
        VALUES ($1, 0, 'receipt', $2, $3, $4)
        """,
        head.seq,
        receipt,
        receipt_leaf,
        ctx.import_id,
    )
    await chain.advance_head(conn, head)
    return head, batches


def _batch(kind: str, root: bytes, size: int, ctx: ImportContext) -> chain.NewBatch:
    return chain.NewBatch(
        kind=kind,
        root=root,
        records=size,
        manifest_sha256=ctx.manifest_sha256,
        policy_sha256=ctx.policy_sha256,
        import_id=ctx.import_id,
    )


class _Tally(msgspec.Struct, kw_only=True):
    counts: dict[str, int]
    batch_roots: list[tuple[bytes, int]]  # (Merkle root, size) of each batch of committed rows
    outcomes_root: bytes


async def _outcome_pass(conn: Conn, import_id: uuid.UUID, batch_rows_max: int, *, hashes: bool) -> _Tally:
    """One pass in row order over the import's outcomes: the counts, the batch roots and the
    outcomes root, reading the narrow decisions and the few quarantined rows, merged.

    Accepted rows' outcome bytes are the template ``outcome_bytes`` uses for them; quarantined
    rows go through ``outcome_bytes`` itself, as verification will. Committed rows are numbered
    in row order, so this order is also their order in the batches.
    """
    committed_rows = duplicate_rows = quarantined_rows = 0
    roots: list[tuple[bytes, int]] = []
    pending: list[bytes] = []
    outcomes = merkle.BlockedRoot()
    quarantined = conn.cursor(_QUARANTINED_IN_ORDER, import_id, prefetch=_FETCH_ROWS).__aiter__()
    held = await anext(quarantined, None)  # the next quarantined row, merged in by row number

    async def quarantined_before(row_no: int | None) -> None:
        nonlocal held, quarantined_rows
        while held is not None and (row_no is None or held[0] < row_no):
            quarantined_rows += 1
            if hashes:
                outcomes.append(leaf_hash(outcome_bytes((held[0], "quarantined", None, held[1], held[2]))))
            held = await anext(quarantined, None)

    async for row_no, committed, record_hash, outcome_leaf in conn.cursor(
        _ACCEPTED_IN_ORDER, import_id, prefetch=_FETCH_ROWS
    ):
        if held is not None and held[0] < row_no:
            await quarantined_before(row_no)
        if not committed:
            duplicate_rows += 1
        else:
            committed_rows += 1
            if hashes:
                pending.append(record_hash)
                if len(pending) == batch_rows_max:
                    roots.append((merkle.root(pending), len(pending)))
                    pending = []
        if hashes:
            outcomes.append(outcome_leaf)
    await quarantined_before(None)
    if pending:
        roots.append((merkle.root(pending), len(pending)))
    counts = {
        "total": committed_rows + duplicate_rows + quarantined_rows,
        "committed": committed_rows,
        "duplicate": duplicate_rows,
        "quarantined": quarantined_rows,
    }
    return _Tally(counts=counts, batch_roots=roots, outcomes_root=outcomes.root())


def outcome_bytes(row: asyncpg.Record | Sequence[Any]) -> bytes:
    """The canonical row_outcome bytes for one import_rows row (shared with verification).

    A stored row that no longer forms a valid outcome (tampered with) yields bytes that are
    not canonical JSON, so it cannot hash to the receipt's root and verification reports it.
    """
    row_no, outcome, record_hash, errors, cells = row[0], row[1], row[2], row[3], row[4]
    try:
        return records.row_outcome(
            row=int(row_no),
            outcome=outcome,
            record_hash=None if record_hash is None else bytes(record_hash).hex(),
            errors=[(e["field"], e["rule"]) for e in errors or ()],
            cells=cells if outcome == "quarantined" else None,
        )
    except (LedgerError, KeyError, TypeError) as exc:
        return b"\xffmalformed row outcome " + repr((row_no, str(exc))).encode()
