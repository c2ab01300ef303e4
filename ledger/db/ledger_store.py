"""The append-only store: one transaction turns a staged import into ledger batches.

Record hashes were computed by the worker before this runs; under the head lock we only
classify rows with set-based SQL, fold precomputed leaf hashes into batch roots, link the
chain and insert. Nothing here is per row except streaming leaf hashes through Python. The
current-state projection (assets) is not written here: ledger.db.projection applies the
committed batches after this transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ledger.core import merkle, records
from ledger.core.errors import LedgerError
from ledger.core.hashing import leaf_hash
from ledger.db import chain, projection
from ledger.db.pool import Conn

__all__ = [
    "FinalizeResult",
    "ImportAlreadyFinished",
    "ImportCancelled",
    "ImportContext",
    "finalize_import",
    "outcome_bytes",
]

# Rows fetched per round trip when streaming hashes out of a cursor.
_FETCH_ROWS = 10_000
# Per sort or hash of the final transaction; one import's keys and hashes fit (1M rows ~ 100 MB).
_WORK_MEM = "256MB"
# From this many staged rows the decide statement runs without nested loops. Its join of the
# rows to their keys' aggregate is estimated at a handful of rows whatever the statistics,
# and the planner then probes assets (and the pending entries) once per row: measured, a 1M-row
# import decided against a freshly projected 1M-row assets table ran for over nine minutes
# instead of seconds. Below it, index probes per row are the right plan and cost little.
_SET_BASED_ROWS_MIN = 10_000


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
    staged_rows: int = 0  # rows in staging; picks the plan guard below


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


_CLASSIFY = """
CREATE TEMP TABLE import_decisions (
    row_no bigint NOT NULL, asset_id text, grant_code text, leaf_hash bytea,
    decision text, revision integer, conflict_rows bigint[], ord bigint
) ON COMMIT DROP;

"""

# One statement decides every valid row: a key seen with two contents in the manifest is a
# conflict (all its rows quarantined); content equal to the ledger's latest revision is a
# duplicate; otherwise the key's first row commits and later identical rows are duplicates.
# The latest revision is the projection's, or a newer one committed in a batch the projection
# has not applied yet (ledger.db.projection). Committed rows are numbered in row order (ord):
# that numbering places each entry in its batch.
_DECIDE = f"""
INSERT INTO import_decisions (row_no, asset_id, grant_code, leaf_hash, decision, revision, ord)
WITH valid AS (
    SELECT row_no, asset_id, grant_code, leaf_hash FROM import_staging
    WHERE import_id = $1 AND errors IS NULL
), contents AS (
    -- Two hash aggregations instead of a sort for count(DISTINCT ...): each key's contents,
    -- then how many there are and where the key first appears.
    SELECT asset_id, grant_code, leaf_hash, min(row_no) AS first_row
    FROM valid GROUP BY asset_id, grant_code, leaf_hash
), keys AS (
    SELECT asset_id, grant_code, min(first_row) AS first_row, count(*) AS variants
    FROM contents GROUP BY asset_id, grant_code
), pending AS ({projection.PENDING_LATEST}
), decided AS (
    SELECT v.row_no, v.asset_id, v.grant_code, v.leaf_hash,
           CASE WHEN k.variants > 1 THEN 'conflict'
                WHEN l.leaf_hash = v.leaf_hash THEN 'duplicate'
                WHEN v.row_no = k.first_row THEN 'commit'
                ELSE 'duplicate' END AS decision,
           CASE WHEN k.variants > 1 THEN NULL
                WHEN l.leaf_hash = v.leaf_hash THEN l.revision
                ELSE coalesce(l.revision, 0) + 1 END AS revision
    FROM valid v
    JOIN keys k USING (asset_id, grant_code)
    LEFT JOIN assets a ON a.asset_id = v.asset_id AND a.grant_code = v.grant_code
    LEFT JOIN pending p ON p.asset_id = v.asset_id AND p.grant_code = v.grant_code
    CROSS JOIN LATERAL (
        SELECT CASE WHEN p.revision > coalesce(a.revision, 0) THEN p.revision ELSE a.revision END AS revision,
               CASE WHEN p.revision > coalesce(a.revision, 0) THEN p.leaf_hash ELSE a.leaf_hash END AS leaf_hash
    ) l
)
SELECT row_no, asset_id, grant_code, leaf_hash, decision, revision,
       CASE WHEN decision = 'commit'
            THEN row_number() OVER (PARTITION BY decision = 'commit' ORDER BY row_no) - 1 END
FROM decided
"""

# The rows a conflicting key appears in (the first ten), for the message: conflicts are rare.
_CONFLICT_ROWS = """
UPDATE import_decisions d SET conflict_rows = c.sample
FROM (SELECT asset_id, grant_code, (array_agg(row_no ORDER BY row_no))[1:10] AS sample
      FROM import_decisions WHERE decision = 'conflict' GROUP BY asset_id, grant_code) c
WHERE d.decision = 'conflict' AND d.asset_id = c.asset_id AND d.grant_code = c.grant_code
"""

# The entries of the committed rows. The current-state rows are applied after the commit
# (ledger.db.projection), not here under the head lock.
_INSERT_ENTRIES = """
INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, asset_id, grant_code,
                            revision, import_id, row_no)
SELECT $2 + d.ord / $3, d.ord % $3, 'asset', s.record, s.leaf_hash, s.asset_id, s.grant_code,
       d.revision, $1, s.row_no
FROM import_decisions d
JOIN import_staging s ON s.import_id = $1 AND s.row_no = d.row_no
WHERE d.decision = 'commit'
"""

# Row outcomes of the valid rows, from the decisions alone (narrow: no staged record read).
_INSERT_ACCEPTED_ROWS = """
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, revision, record_hash)
SELECT $1, row_no, CASE WHEN decision = 'commit' THEN 'committed' ELSE 'duplicate' END,
       asset_id, grant_code, revision, leaf_hash
FROM import_decisions
WHERE decision <> 'conflict'
"""

# The quarantined rows: those the policy refused (found through the staging table's partial
# index) and those of a key with two contents in the manifest.
_QUARANTINED = """
SELECT s.row_no, s.asset_id, s.grant_code, s.errors, convert_from(s.cells, 'UTF8')::jsonb AS cells
FROM import_staging s
WHERE s.import_id = $1 AND s.errors IS NOT NULL
UNION ALL
SELECT s.row_no, s.asset_id, s.grant_code,
       jsonb_build_array(jsonb_build_object(
           'field', 'key',
           'rule', 'duplicate_key_in_manifest',
           'message', format('asset_id %s with grant_code %s appears with different content in rows %s',
                             s.asset_id, s.grant_code, array_to_string(d.conflict_rows, ', ')))),
       convert_from(s.cells, 'UTF8')::jsonb
FROM import_decisions d
JOIN import_staging s ON s.import_id = $1 AND s.row_no = d.row_no
WHERE d.decision = 'conflict'
"""

_INSERT_QUARANTINED_ROWS = f"""
INSERT INTO import_rows (import_id, row_no, outcome, asset_id, grant_code, errors, cells)
SELECT $1, q.row_no, 'quarantined', q.asset_id, q.grant_code, q.errors, q.cells
FROM ({_QUARANTINED}) q
"""


# The accepted rows in row order with their outcome leaves, hashed by PostgreSQL: the bytes are
# records.ACCEPTED_OUTCOME_TEMPLATE (the same template the verifier re-encodes them with).
_ACCEPTED_IN_ORDER = """
SELECT row_no, decision = 'commit', leaf_hash,
       sha256('\\x00'::bytea || convert_to(format({template}, CASE WHEN decision = 'commit' THEN 'committed'
                                                          ELSE 'duplicate' END,
                                              encode(leaf_hash, 'hex'), row_no), 'UTF8'))
FROM import_decisions WHERE decision <> 'conflict' ORDER BY row_no
""".format(template="'" + records.ACCEPTED_OUTCOME_TEMPLATE.decode().replace("%d", "%s").replace("'", "''") + "'")

_QUARANTINED_IN_ORDER = """
SELECT row_no, errors, cells FROM import_rows
WHERE import_id = $1 AND outcome = 'quarantined' ORDER BY row_no
"""


async def finalize_import(conn: Conn, ctx: ImportContext, *, batch_rows_max: int) -> FinalizeResult:
    """Classify, commit and account for every staged row of one import, atomically.

    A dry run classifies against the ledger and records the row outcomes but takes no
    lock and writes no batch, entry, receipt or asset.
    """
    steps = _Steps()
    async with conn.transaction():
        # Locking the import row first makes a concurrent cancel wait for us, or us see it.
        status = await conn.fetchval("SELECT status FROM imports WHERE id = $1 FOR UPDATE", ctx.import_id)
        if status == "cancelled":
            raise ImportCancelled(str(ctx.import_id))
        if status in ("done", "failed"):
            raise ImportAlreadyFinished(str(ctx.import_id))
        head: chain.Head | None = None
        if not ctx.dry_run:
            # The head lock serialises linking, and also the dedupe decisions that depend
            # on what the previous import committed.
            head = await chain.lock_head(conn)
        steps.done("lock")
        # Every statement below joins, groups or sorts the whole import: in memory, not on disk.
        await conn.execute(f"SET LOCAL work_mem = '{_WORK_MEM}'")
        await conn.execute(_CLASSIFY)
        guarded = ctx.staged_rows >= _SET_BASED_ROWS_MIN
        if guarded:
            await conn.execute("SET LOCAL enable_nestloop = off")
        await conn.execute(_DECIDE, ctx.import_id)
        if guarded:
            # The statements below look up few rows (conflicts) by index: nested loops are right there.
            await conn.execute("SET LOCAL enable_nestloop TO DEFAULT")
        # Statistics for the joins that follow (a temp table has none until analysed).
        await conn.execute("ANALYZE import_decisions")
        await conn.execute(_CONFLICT_ROWS)
        steps.done("decide")
        await conn.execute(_INSERT_ACCEPTED_ROWS, ctx.import_id)
        await conn.execute(_INSERT_QUARANTINED_ROWS, ctx.import_id)
        steps.done("row_outcomes")
        tally = await _outcome_pass(conn, ctx.import_id, batch_rows_max, hashes=head is not None)
        counts = tally.counts
        steps.done("outcome_pass")
        batches: list[tuple[int, bytes]] = []
        if head is not None:
            now = datetime.now(UTC)
            first_seq = head.seq + 1
            asset_roots = tally.batch_roots
            head = await chain.append_batches(conn, head, [_batch("assets", r, n, ctx) for r, n in asset_roots], now)
            batches = [(first_seq + i, r) for i, (r, _) in enumerate(asset_roots)]
            if asset_roots:
                await conn.execute(_INSERT_ENTRIES, ctx.import_id, first_seq, batch_rows_max)
                steps.done("entries")
            outcomes_root = tally.outcomes_root
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
                outcomes_root=outcomes_root.hex(),
                batches=[(s, h.hex()) for s, h in batches],
            )
            receipt_leaf = leaf_hash(receipt)
            head = await chain.append_batches(conn, head, [_batch("receipt", merkle.root([receipt_leaf]), 1, ctx)], now)
            seq = head.seq
            await conn.execute(
                """
                INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, import_id)
                VALUES ($1, 0, 'receipt', $2, $3, $4)
                """,
                seq,
                receipt,
                receipt_leaf,
                ctx.import_id,
            )
            await chain.advance_head(conn, head)
        await conn.execute(
            """
            UPDATE imports SET status = 'done', finished_at = now(), error = NULL,
                   rows_total = $2, rows_committed = $3, rows_duplicate = $4, rows_quarantined = $5
            WHERE id = $1
            """,
            ctx.import_id,
            counts["total"],
            counts["committed"],
            counts["duplicate"],
            counts["quarantined"],
        )
        await conn.execute("DELETE FROM import_staging WHERE import_id = $1", ctx.import_id)
        steps.done("cleanup")
    steps.done("commit")
    return FinalizeResult(
        rows_total=counts["total"],
        rows_committed=counts["committed"],
        rows_duplicate=counts["duplicate"],
        rows_quarantined=counts["quarantined"],
        batches=batches,
        timings=steps.timings,
    )


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

    async for row_no, committed, record_hash, outcome_leaf in conn.cursor(_ACCEPTED_IN_ORDER, prefetch=_FETCH_ROWS):
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
