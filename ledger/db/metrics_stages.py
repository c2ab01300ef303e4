"""Seconds each stage of an import took, kept on the import (``imports.stage_seconds``,
migration 0015) for the duration histograms of ``GET /metrics`` (ledger.db.metrics).

The stages are written where they are timed: ``upload`` by the API when it records the import,
``parse_validate``, ``stage``, ``decide`` and ``finalize`` by the worker when the import ends,
``projection`` by the worker's projector once it has applied the import's batches. Keeping them
in the database rather than in per-process metric files means every API process reports the
same figures, a worker's restart loses none, and no file piles up per process.

Writing a figure is best effort: the import's outcome never depends on it, so a failure here is
logged and swallowed (a transient one would otherwise re-run an import that is already done).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import asyncpg

from ledger.db.pool import Executor
from ledger.logs import get_logger

__all__ = ["STAGES", "record_projection", "record_stages"]

log = get_logger("ledger.metrics")

# Every stage an import may report, in pipeline order; GET /metrics labels by these alone.
STAGES = ("upload", "parse_validate", "stage", "decide", "finalize", "projection")

_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


async def record_stages(conn: Executor, import_id: uuid.UUID, seconds: Mapping[str, float]) -> None:
    """Set these stages' seconds on the import, beside the stages other processes wrote."""
    known = {stage: round(float(value), 6) for stage, value in seconds.items() if stage in STAGES and value >= 0}
    if not known:
        return
    try:
        await conn.execute(
            "UPDATE imports SET stage_seconds = coalesce(stage_seconds, '{}'::jsonb) || $2::jsonb WHERE id = $1",
            import_id,
            known,
        )
    except _FAILURES as exc:
        log.warning("stage_seconds_not_recorded", stage="metrics", task_id=str(import_id), error=type(exc).__name__)


# The imports whose asset batches a projection run applied: those with a batch past where it
# started and up to where the projection now is. Corrections' batches name no import; an import
# whose projection is already recorded (another worker's run got there first) keeps its figure.
_RECORD_PROJECTION = """
UPDATE imports i
SET stage_seconds = coalesce(i.stage_seconds, '{}'::jsonb) || jsonb_build_object('projection', $2::float8)
WHERE i.id IN (
    SELECT DISTINCT b.import_id FROM ledger_batches b
    WHERE b.seq > $1 AND b.seq <= (SELECT applied_seq FROM assets_projection WHERE id = 1)
      AND b.kind = 'assets' AND b.import_id IS NOT NULL)
  AND i.status = 'done'
  AND NOT coalesce(i.stage_seconds ? 'projection', false)
"""


async def record_projection(conn: Executor, applied_from: int, seconds: float) -> None:
    """A projection run that started at ``applied_from`` took ``seconds``: each import it made
    current gets them as its ``projection`` stage (the wait for the assets to be current)."""
    try:
        await conn.execute(_RECORD_PROJECTION, applied_from, round(seconds, 6))
    except _FAILURES as exc:
        log.warning("stage_seconds_not_recorded", stage="metrics", error=type(exc).__name__)
