"""The current-state projection (``assets``), applied from the chain after each commit.

An import's final transaction writes the ledger only. Applying its rows to ``assets`` there
held the head lock for as long again, and every ``GET /assets`` index scan meanwhile walked
the not-yet-visible rows. Here committed batches are applied in short transactions of about
``rows_per_step`` records each, in chain order, and ``assets_projection.applied_seq`` records
how far it got, in the same transaction as the rows: a crash loses no step and repeats none.

The upsert only ever moves a key to a higher revision, so applying a batch twice, late, or
after a correction wrote its own asset row (the review path does, in its transaction) leaves
the same state. Readers that must know the latest revision of a key now (dedupe decisions,
conflict checks) read the ledger past ``applied_seq`` as well (``PENDING_LATEST``).
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from ledger.db.pool import Conn
from ledger.logs import get_logger

__all__ = ["ASSETS_UPSERT", "PENDING_LATEST", "ProjectionState", "apply_pending", "projection_state"]

log = get_logger("ledger.projection")


def _latest_per_key(columns: str, where: str) -> str:
    """The latest asset entry of every key among the entries ``where`` selects."""
    return f"""
SELECT DISTINCT ON (asset_id, grant_code) {columns}
FROM ledger_entries
WHERE {where} AND kind = 'asset'
ORDER BY asset_id, grant_code, revision DESC
"""


# A CTE body: the latest revision of every key committed in a batch not yet projected, with
# the lab it belongs to. Every asset entry names the import it came from (a correction, that of
# its quarantined row), whose lab is the record's: a join on a primary key instead of parsing
# each pending record.
PENDING_LATEST = f"""
SELECT l.asset_id, l.grant_code, l.revision, l.leaf_hash, l.batch_seq, i.lab
FROM ({
    _latest_per_key(
        "asset_id, grant_code, revision, leaf_hash, batch_seq, import_id",
        "batch_seq > (SELECT applied_seq FROM assets_projection WHERE id = 1)",
    )
}) l
JOIN imports i ON i.id = l.import_id
"""

# The tail of every write into assets (this projector, and a correction in its own
# transaction): a key only ever moves to a higher revision, so writes commute.
ASSETS_UPSERT = """
ON CONFLICT (asset_id, grant_code) DO UPDATE SET
    lab = EXCLUDED.lab, category = EXCLUDED.category, location = EXCLUDED.location,
    revision = EXCLUDED.revision, entry_id = EXCLUDED.entry_id, batch_seq = EXCLUDED.batch_seq,
    leaf_hash = EXCLUDED.leaf_hash, data = EXCLUDED.data, updated_at = EXCLUDED.updated_at
WHERE assets.revision < EXCLUDED.revision
"""

_APPLY = f"""
WITH latest AS ({
    _latest_per_key(
        "id, batch_seq, asset_id, grant_code, revision, leaf_hash, record", "batch_seq > $1 AND batch_seq <= $2"
    )
})
INSERT INTO assets (asset_id, grant_code, lab, category, location, revision, entry_id, batch_seq,
                    leaf_hash, data, updated_at)
SELECT l.asset_id, l.grant_code, r.rec ->> 'lab', r.rec -> 'data' ->> 'category',
       r.rec -> 'data' ->> 'location', l.revision, l.id, l.batch_seq, l.leaf_hash, r.rec -> 'data',
       b.committed_at
FROM latest l
JOIN ledger_batches b ON b.seq = l.batch_seq
-- OFFSET 0 keeps the subquery a subquery: pulled up, its expression was copied into each of
-- the four uses above, and every record was parsed into jsonb four times.
CROSS JOIN LATERAL (SELECT convert_from(l.record, 'UTF8')::jsonb AS rec OFFSET 0) r
{ASSETS_UPSERT}
"""

# A step's sort of its entries by key fits in memory (10,000 records ~ 4 MB, the default).
_STEP_WORK_MEM = "64MB"

# Batches looked at per step; a step ends early once it holds rows_per_step records.
_BATCHES_PER_STEP = 1000


class ProjectionState(msgspec.Struct, frozen=True):
    applied_seq: int
    head_seq: int


async def projection_state(conn: Conn) -> ProjectionState:
    row = await conn.fetchrow(
        "SELECT p.applied_seq, h.seq FROM assets_projection p, ledger_head h WHERE p.id = 1 AND h.id = 1"
    )
    assert row is not None, "assets_projection row missing: run migrations"
    return ProjectionState(int(row[0]), int(row[1]))


# A final transaction in progress: the projection waits for it between steps.
_FINALIZING = "SELECT EXISTS (SELECT 1 FROM imports WHERE status = 'finalizing' AND NOT dry_run)"
_YIELD_POLL_SECONDS = 0.25


async def apply_pending(conn: Conn, *, rows_per_step: int = 10_000, yield_seconds_max: float = 60.0) -> int:
    """Apply every committed batch past the watermark; returns how many batches it applied.

    Several appliers may run at once (two workers after two commits): each step locks the
    watermark, so they take turns step by step and none applies a batch the other did.

    The projection is a cache of the ledger, and on a small machine it competes for the same
    CPU and WAL as the next import's final transaction: while one runs, the projection waits
    between steps (for at most ``yield_seconds_max`` in all, so that a stream of imports
    cannot starve it). ``GET /imports/{id}`` says meanwhile that the assets are not current.
    """
    started = time.perf_counter()
    yield_until = time.monotonic() + yield_seconds_max
    applied_batches = 0
    records = 0
    waited = 0.0
    while True:
        while time.monotonic() < yield_until and await conn.fetchval(_FINALIZING):
            await asyncio.sleep(_YIELD_POLL_SECONDS)
            waited += _YIELD_POLL_SECONDS
        async with conn.transaction():
            await conn.execute("SELECT set_config('work_mem', $1, true)", _STEP_WORK_MEM)
            applied = await conn.fetchval("SELECT applied_seq FROM assets_projection WHERE id = 1 FOR UPDATE")
            assert applied is not None, "assets_projection row missing: run migrations"
            batches = await conn.fetch(
                "SELECT seq, records FROM ledger_batches WHERE seq > $1 ORDER BY seq LIMIT $2",
                applied,
                _BATCHES_PER_STEP,
            )
            if not batches:
                break
            upto, held = applied, 0
            for batch in batches:
                upto = int(batch["seq"])
                held += int(batch["records"])
                if held >= rows_per_step:
                    break
            await conn.execute(_APPLY, applied, upto)
            await conn.execute("UPDATE assets_projection SET applied_seq = $1 WHERE id = 1", upto)
            applied_batches += upto - int(applied)
            records += held
    if applied_batches:
        log.info(
            "assets_projected",
            stage="projection",
            batches=applied_batches,
            records=records,
            seconds=round(time.perf_counter() - started, 3),
            yielded_seconds=round(waited, 2),
        )
    return applied_batches
