"""The append-only store: one transaction turns a staged, decided import into ledger batches.

Record hashes were computed by the worker before this runs, and the decisions taken just
before the final transaction (ledger.db.import_decisions). Under the head lock we only insert
with set-based SQL and link the chain; the batch roots and the outcomes root are folded from
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
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import asyncpg
import msgspec
from opentelemetry import trace

from ledger import audit_log
from ledger.core import merkle, records
from ledger.core.hashing import leaf_hash
from ledger.db import chain, connectors
from ledger.db import import_decisions as decisions
from ledger.db.checkpoints import CheckpointSigning
from ledger.db.head import LockedHead, lock_head
from ledger.db.pool import Conn
from ledger.db.stored_outcomes import accepted_leaf_sql, stored_outcome

__all__ = [
    "FinalizeResult",
    "ImportAlreadyFinished",
    "ImportCancelled",
    "ImportContext",
    "SideConnection",
    "finalize_import",
]

# Rows fetched per round trip when streaming hashes out of a cursor.
_FETCH_ROWS = 10_000

_tracer = trace.get_tracer(__name__)

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
    # Signs a checkpoint of the new head in the committing transaction; None signs none.
    signing: CheckpointSigning | None = None


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

# A valid row's outcome word (ledger.core.outcomes.ACCEPTED) from its decision.
_ACCEPTED_OUTCOME = "CASE WHEN decision = 'commit' THEN 'committed' ELSE 'duplicate' END"

# Row outcomes of the valid rows, from the decisions alone (narrow: no staged record read).
_INSERT_ACCEPTED_ROWS = f"""
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, revision, record_hash)
SELECT $1, row_no, {_ACCEPTED_OUTCOME}, asset_id, grant_code, revision, leaf_hash
FROM import_decisions
WHERE import_id = $1 AND {decisions.ACCEPTED_DECISIONS}
"""

_INSERT_QUARANTINED_ROWS = f"""
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, errors, cells)
SELECT $1, q.row_no, 'quarantined', q.asset_id, q.grant_code, q.errors, q.cells
FROM ({decisions.QUARANTINED}) q
"""


# The accepted rows in row order with their outcome leaves, hashed by PostgreSQL: the bytes are
# outcomes.ACCEPTED_TEMPLATE (the same template the verifier re-encodes them with).
_ACCEPTED_IN_ORDER = f"""
SELECT row_no, decision = 'commit', leaf_hash, {accepted_leaf_sql(_ACCEPTED_OUTCOME, "leaf_hash", "row_no")}
FROM import_decisions WHERE import_id = $1 AND {decisions.ACCEPTED_DECISIONS} ORDER BY row_no
"""

# Read from staging and the decisions, not from import_rows: the pass may run on a connection
# of its own, beside the transaction that writes import_rows.
_QUARANTINED_IN_ORDER = f"SELECT q.row_no, q.errors, q.cells FROM ({decisions.QUARANTINED}) q ORDER BY q.row_no"


async def finalize_import(
    conn: Conn, ctx: ImportContext, *, batch_rows_max: int, side: SideConnection | None = None
) -> FinalizeResult:
    """Decide, commit and account for every staged row of one import, atomically.

    The decisions are taken first, in a transaction of their own (ledger.db.import_decisions);
    the final transaction then takes the head lock, checks that nothing committed since
    changed them, and writes. With ``side`` (a source of a second connection), the pass that hashes
    batch roots and the outcomes root runs there meanwhile, instead of after the writes.

    A dry run classifies against the ledger and records the row outcomes but takes no
    lock and writes no batch, entry, receipt or asset.
    """
    steps = _Steps()
    import_id = ctx.import_id
    _check_status(await conn.fetchval("SELECT status FROM imports WHERE id = $1", import_id), import_id)
    with _tracer.start_as_current_span("decide"):  # a child of the import's span "finalize"
        decided_seq = await decisions.decide(conn, import_id, staged_rows=ctx.staged_rows)
    steps.done("decide")
    hashes = not ctx.dry_run
    tally_task: asyncio.Task[_Tally] | None = None
    if side is not None:
        tally_task = asyncio.create_task(_side_pass(side, import_id, batch_rows_max, hashes=hashes))
    try:
        # The import-done and checkpoint-signed audit lines are written once this commits.
        async with audit_log.deferred(provider="worker"), conn.transaction():
            head = await _lock(conn, ctx)
            steps.done("lock")
            if head is not None and await decisions.stale(conn, import_id, decided_seq, staged_rows=ctx.staged_rows):
                # Rare: a batch committed since the snapshot touched one of our keys.
                await _drop(tally_task)
                tally_task = None
                await decisions.redecide(conn, import_id, staged_rows=ctx.staged_rows)
                steps.done("redecide")
            await _insert_row_outcomes(conn, import_id)
            steps.done("row_outcomes")
            if head is not None:
                await _insert_entries(conn, ctx, head, batch_rows_max)
                steps.done("entries")
            tally = await _tally(conn, tally_task, import_id, batch_rows_max, hashes=hashes)
            counts = tally.counts
            steps.done("outcome_pass")
            batches: list[tuple[int, bytes]] = []
            if head is not None:
                head, batches = await _link(conn, head, ctx, tally)
                # A connector's sync: its cursor moves with the commit, never before it.
                await connectors.advance_cursor(conn, import_id)
            else:
                audit_log.after_commit(_done_event(ctx, counts, audit_log.LedgerFields()))
            await _mark_done(conn, import_id, counts)
        steps.done("commit")
    finally:
        await _drop(tally_task)
    await _discard_working_rows(conn, import_id)
    steps.done("cleanup")
    return FinalizeResult(
        rows_total=counts["total"],
        rows_committed=counts["committed"],
        rows_duplicate=counts["duplicate"],
        rows_quarantined=counts["quarantined"],
        batches=batches,
        timings=steps.timings,
    )


async def _lock(conn: Conn, ctx: ImportContext) -> LockedHead | None:
    """Lock the import row and check it is still to be finished; then, unless a dry run, take
    the head lock and return the head."""
    # Locking the import row first makes a concurrent cancel wait for us, or us see it.
    status = await conn.fetchval("SELECT status FROM imports WHERE id = $1 FOR UPDATE", ctx.import_id)
    _check_status(status, ctx.import_id)
    head: LockedHead | None = None
    if not ctx.dry_run:
        # The head lock serialises linking, and makes the decisions final: nothing
        # that could change them commits until this transaction does.
        head = await lock_head(conn)
    return head


async def _insert_row_outcomes(conn: Conn, import_id: uuid.UUID) -> None:
    """Write the row outcomes of the valid rows, then of the quarantined ones."""
    await conn.execute(_INSERT_ACCEPTED_ROWS, import_id)
    await conn.execute(_INSERT_QUARANTINED_ROWS, import_id)


async def _insert_entries(conn: Conn, ctx: ImportContext, head: LockedHead, batch_rows_max: int) -> None:
    """Write the entries of the committed rows, numbered into batches after the head."""
    # Entries need only where the import's batches start; their roots come later.
    async with decisions.set_based(conn, ctx.staged_rows):
        await conn.execute(_INSERT_ENTRIES, ctx.import_id, head.seq + 1, batch_rows_max)


async def _tally(
    conn: Conn, tally_task: asyncio.Task[_Tally] | None, import_id: uuid.UUID, batch_rows_max: int, *, hashes: bool
) -> _Tally:
    """The outcome pass's result: the side pass's when it runs, else the pass run here."""
    if tally_task is not None:
        return await tally_task
    await conn.execute("SELECT set_config('work_mem', $1, true)", decisions.WORK_MEM)
    return await _outcome_pass(conn, import_id, batch_rows_max, hashes=hashes)


async def _mark_done(conn: Conn, import_id: uuid.UUID, counts: dict[str, int]) -> None:
    """Mark the import done, with its row counts."""
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


async def _discard_working_rows(conn: Conn, import_id: uuid.UUID) -> None:
    """Drop what the import staged and decided, after the commit; a failure here is no error."""
    # Working state, after the commit: it is not the ledger, and what a failure or a crash here
    # leaves behind, the next worker start sweeps (decisions.sweep_finished). The import is done.
    with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        await decisions.discard_working_rows(conn, import_id)


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
    conn: Conn, head: LockedHead, ctx: ImportContext, tally: _Tally
) -> tuple[LockedHead, list[tuple[int, bytes]]]:
    """Append the import's asset batches and its receipt to the chain, and move the head."""
    now = datetime.now(UTC)
    first_seq = head.seq + 1
    asset_roots = tally.batch_roots
    head = await chain.append_batches(conn, head, [_batch("assets", r, n, ctx) for r, n in asset_roots], now)
    batches = [(first_seq + i, r) for i, (r, _) in enumerate(asset_roots)]
    counts = tally.counts
    source = await conn.fetchval("SELECT source FROM imports WHERE id = $1", ctx.import_id)
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
        source=source,
    )
    receipt_leaf = leaf_hash(receipt)
    receipt_root = merkle.root([receipt_leaf])
    head = await chain.append_batches(conn, head, [_batch("receipt", receipt_root, 1, ctx)], now)
    entry_id = await conn.fetchval(
        """
        INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, import_id)
        VALUES ($1, 0, 'receipt', $2, $3, $4) RETURNING id
        """,
        head.seq,
        receipt,
        receipt_leaf,
        ctx.import_id,
    )
    receipt_at = audit_log.LedgerFields(
        batch_seq=head.seq,
        entry_index=0,
        entry_id=entry_id,
        batch_hash=receipt_root.hex(),
        record_hash=receipt_leaf.hex(),
    )
    audit_log.after_commit(_done_event(ctx, counts, receipt_at))
    await chain.advance_head(conn, head, ctx.signing)
    return head, batches


def _done_event(ctx: ImportContext, counts: dict[str, int], receipt: audit_log.LedgerFields) -> audit_log.AuditEvent:
    """import-done, at its receipt's position on the ledger (a dry run has none)."""
    fields = msgspec.structs.replace(
        receipt,
        task_id=str(ctx.import_id),
        lab=ctx.lab,
        dry_run=ctx.dry_run,
        rows_total=counts["total"],
        rows_committed=counts["committed"],
        rows_duplicate=counts["duplicate"],
        rows_quarantined=counts["quarantined"],
    )
    return audit_log.event(audit_log.IMPORT_DONE, ledger=fields)


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

    Accepted rows' outcome bytes are the template ``stored_outcome`` uses for them; quarantined
    rows go through ``stored_outcome`` itself, as verification will. Committed rows are numbered
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
                outcomes.append(leaf_hash(stored_outcome((held[0], "quarantined", None, held[1], held[2]))))
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
