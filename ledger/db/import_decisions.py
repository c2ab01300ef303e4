"""What becomes of every staged row (the ``import_decisions`` table): decided against a
snapshot, before the head lock.

Deciding (which rows commit, which are duplicates, which keys conflict, at which revision)
reads the whole import and the ledger's latest revisions: seconds for a large manifest. Done
under the head lock, it kept every other writer waiting, and the pass that hashes the
outcomes could not start before it. So the decisions are taken in a transaction of their
own, against a snapshot whose head sequence number is kept (``decide`` returns it), and
committed into ``import_decisions``, where a second connection can read them while the final
transaction writes. Under the lock, ``stale`` asks whether a batch committed since that
snapshot touched any of the import's keys (normally none did, and it costs one index range);
if one did, ``redecide`` takes the decisions again inside the final transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ledger.db import import_statuses, projection
from ledger.db.head import head_seq
from ledger.db.pool import Conn, Executor

__all__ = [
    "ACCEPTED_DECISIONS",
    "QUARANTINED",
    "SET_BASED_ROWS_MIN",
    "WORK_MEM",
    "decide",
    "discard_working_rows",
    "redecide",
    "set_based",
    "stale",
    "sweep_finished",
]

# From this many staged rows the statements that join the whole import run without nested
# loops. The row-to-key join is estimated at a handful of rows whatever the statistics, and
# the planner then probes assets (and the pending entries) once per row: measured, a 1M-row
# import decided against a freshly projected 1M-row assets table ran for over nine minutes
# instead of seconds. Below it, index probes per row are the right plan and cost little.
SET_BASED_ROWS_MIN = 10_000
# Per sort or hash; one import's keys and hashes fit (1M rows ~ 100 MB).
WORK_MEM = "256MB"

# What a valid row may become: committed or duplicate (accepted), or quarantined for its key
# (the reasons below). Every statement that tells them apart uses these.
ACCEPTED_DECISIONS = "decision IN ('commit', 'duplicate')"

# One statement decides every valid row: a key whose latest revision belongs to another lab is
# that lab's (all its rows quarantined, ``other_lab``: an asset key belongs to the lab that
# committed it, until an officer transfers it); a key seen with two contents in the manifest is
# a conflict (all its rows quarantined); content equal to the ledger's latest revision is a
# duplicate; otherwise the key's first row commits and later identical rows are duplicates.
# The latest revision is the projection's, or a newer one committed in a batch the projection
# has not applied yet (ledger.db.projection). Committed rows are numbered in row order (ord):
# that numbering places each entry in its batch.
_DECIDE = f"""
INSERT INTO import_decisions (import_id, row_no, asset_id, grant_code, leaf_hash, decision, revision, ord)
WITH lab AS (
    SELECT lab FROM imports WHERE id = $1
), valid AS (
    SELECT row_no, asset_id, grant_code, leaf_hash FROM import_staging
    WHERE import_id = $1 AND errors IS NULL
), contents AS (
    -- Two hash aggregations instead of a sort for count(DISTINCT ...): each key's contents,
    -- then how many there are and where the key first appears. (min/max of bytea, one
    -- aggregation, exist only from PostgreSQL 18.)
    SELECT asset_id, grant_code, leaf_hash, min(row_no) AS first_row
    FROM valid GROUP BY asset_id, grant_code, leaf_hash
), keys AS (
    SELECT asset_id, grant_code, min(first_row) AS first_row, count(*) > 1 AS conflict
    FROM contents GROUP BY asset_id, grant_code
), pending AS ({projection.PENDING_LATEST}
), decided AS (
    SELECT v.row_no, v.asset_id, v.grant_code, v.leaf_hash,
           CASE WHEN l.lab <> (SELECT lab FROM lab) THEN 'other_lab'
                WHEN k.conflict THEN 'conflict'
                WHEN l.leaf_hash = v.leaf_hash THEN 'duplicate'
                WHEN v.row_no = k.first_row THEN 'commit'
                ELSE 'duplicate' END AS decision,
           CASE WHEN l.lab <> (SELECT lab FROM lab) OR k.conflict THEN NULL
                WHEN l.leaf_hash = v.leaf_hash THEN l.revision
                ELSE coalesce(l.revision, 0) + 1 END AS revision
    FROM valid v
    JOIN keys k USING (asset_id, grant_code)
    LEFT JOIN assets a ON a.asset_id = v.asset_id AND a.grant_code = v.grant_code
    LEFT JOIN pending p ON p.asset_id = v.asset_id AND p.grant_code = v.grant_code
    CROSS JOIN LATERAL (
        SELECT CASE WHEN p.revision > coalesce(a.revision, 0) THEN p.revision ELSE a.revision END AS revision,
               CASE WHEN p.revision > coalesce(a.revision, 0) THEN p.leaf_hash ELSE a.leaf_hash END AS leaf_hash,
               CASE WHEN p.revision > coalesce(a.revision, 0) THEN p.lab ELSE a.lab END AS lab
    ) l
)
SELECT $1, row_no, asset_id, grant_code, leaf_hash, decision, revision,
       -- A running count in row order, not row_number() partitioned by the decision: the rows
       -- arrive in row order (the staged heap's), and a sort on row_no alone finds them sorted.
       CASE WHEN decision = 'commit'
            THEN count(*) FILTER (WHERE decision = 'commit') OVER (ORDER BY row_no ROWS UNBOUNDED PRECEDING) - 1 END
FROM decided
"""

# The rows a conflicting key appears in (the first ten), for the message: conflicts are rare.
_CONFLICT_ROWS = """
UPDATE import_decisions d SET conflict_rows = c.sample
FROM (SELECT asset_id, grant_code, (array_agg(row_no ORDER BY row_no))[1:10] AS sample
      FROM import_decisions WHERE import_id = $1 AND decision = 'conflict' GROUP BY asset_id, grant_code) c
WHERE d.import_id = $1 AND d.decision = 'conflict' AND d.asset_id = c.asset_id AND d.grant_code = c.grant_code
"""

# Did an asset entry committed after the decisions' snapshot (another import's, a correction's)
# touch one of this import's keys? The entries past a sequence number come by index range.
_ANY_SINCE = "SELECT EXISTS (SELECT 1 FROM ledger_entries WHERE batch_seq > $1 AND kind = 'asset')"
_STALE = """
SELECT EXISTS (
    SELECT 1 FROM ledger_entries e
    WHERE e.batch_seq > $2 AND e.kind = 'asset' AND EXISTS (
        SELECT 1 FROM import_decisions d
        WHERE d.import_id = $1 AND d.asset_id = e.asset_id AND d.grant_code = e.grant_code)
)
"""

# The quarantined rows: those the policy refused (found through the staging table's partial
# index) and those of a key with two contents in the manifest. Their outcome bytes are made
# from exactly these values, both where they are stored and where they are hashed.
QUARANTINED = """
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
WHERE d.import_id = $1 AND d.decision = 'conflict'
UNION ALL
SELECT s.row_no, s.asset_id, s.grant_code,
       jsonb_build_array(jsonb_build_object(
           'field', 'asset_id',
           'rule', 'other_lab',
           'message', format('asset_id %s with grant_code %s is registered to another lab; '
                             'a compliance officer may transfer it to this lab', s.asset_id, s.grant_code))),
       convert_from(s.cells, 'UTF8')::jsonb
FROM import_decisions d
JOIN import_staging s ON s.import_id = $1 AND s.row_no = d.row_no
WHERE d.import_id = $1 AND d.decision = 'other_lab'
"""


async def decide(conn: Conn, import_id: uuid.UUID, *, staged_rows: int) -> int:
    """Decide every staged row of ``import_id`` in a transaction of its own, and commit the
    decisions; returns the head sequence number of the snapshot they were taken against."""
    async with conn.transaction(isolation="repeatable_read"):
        # Read first: the snapshot is taken here, so the head and the decisions agree.
        seq = await head_seq(conn)
        await conn.execute("DELETE FROM import_decisions WHERE import_id = $1", import_id)
        await _decide(conn, import_id, staged_rows=staged_rows)
    return int(seq)


async def redecide(conn: Conn, import_id: uuid.UUID, *, staged_rows: int) -> None:
    """Take the decisions again inside the caller's transaction (which holds the head lock)."""
    await conn.execute("DELETE FROM import_decisions WHERE import_id = $1", import_id)
    await _decide(conn, import_id, staged_rows=staged_rows)


async def stale(conn: Conn, import_id: uuid.UUID, decided_seq: int, *, staged_rows: int) -> bool:
    """Whether a batch committed after ``decided_seq`` changes any of the decisions (call it
    holding the head lock, so that nothing commits between this answer and the writes)."""
    if not await conn.fetchval(_ANY_SINCE, decided_seq):
        return False
    async with set_based(conn, staged_rows):
        return bool(await conn.fetchval(_STALE, import_id, decided_seq))


async def _decide(conn: Conn, import_id: uuid.UUID, *, staged_rows: int) -> None:
    async with set_based(conn, staged_rows):
        await conn.execute(_DECIDE, import_id)
    # Statistics for the joins that follow (the table's own are of other imports, or none).
    await conn.execute("ANALYZE import_decisions")
    await conn.execute(_CONFLICT_ROWS, import_id)


@asynccontextmanager
async def set_based(conn: Conn, staged_rows: int) -> AsyncIterator[None]:
    """For the statements inside: in memory, and for big imports without nested loops."""
    # set_config(..., true) is SET LOCAL: whatever happens, it ends with the transaction.
    await conn.execute("SELECT set_config('work_mem', $1, true)", WORK_MEM)
    if staged_rows < SET_BASED_ROWS_MIN:
        yield
        return
    await conn.execute("SET LOCAL enable_nestloop = off")
    yield
    # The statements after look up few rows by index: nested loops are right there.
    await conn.execute("SET LOCAL enable_nestloop TO DEFAULT")


async def discard_working_rows(conn: Executor, import_id: uuid.UUID) -> None:
    """Drop what the import staged and decided: working state, never ledger."""
    await conn.execute("DELETE FROM import_staging WHERE import_id = $1", import_id)
    await conn.execute("DELETE FROM import_decisions WHERE import_id = $1", import_id)


async def sweep_finished(conn: Executor) -> None:
    """Drop working rows of imports that ended (a worker died between a commit and its cleanup)."""
    for table in ("import_staging", "import_decisions"):
        await conn.execute(
            f"DELETE FROM {table} t USING imports i WHERE i.id = t.import_id AND {import_statuses.terminal('i.status')}"
        )
