"""What ``GET /metrics`` reports of the database: one snapshot, read at scrape time.

Imports, the queue, the workers, the chain and its checkpoints, the quarantine and the stage
durations are facts in PostgreSQL, written by whichever API process or worker did the work.
Reading them at scrape time, rather than counting in each process, is what lets any number of
API processes and workers agree, and loses nothing when one restarts (no per-process files, no
multiprocess mode). Every statement is set-based and bounded by the number of imports, never per
row; they run together in one read-only snapshot under a statement timeout, and the caller
(ledger.services.metrics) caches the result for a few seconds.
"""

from __future__ import annotations

import asyncpg
import msgspec

from ledger.db import import_statuses as statuses
from ledger.db.job_queue import IMPORT_ENTRYPOINT
from ledger.db.metrics_stages import STAGES
from ledger.db.pool import Conn, Executor
from ledger.db.quarantine import open_by_reason

__all__ = ["OUTCOMES", "STAGES", "Snapshot", "StageHistogram", "head_unsigned", "read_snapshot"]

OUTCOMES = ("committed", "duplicate", "quarantined")
# A scrape must never hold the database: a statement slower than this fails the snapshot.
STATEMENT_TIMEOUT_MS = 5_000


class StageHistogram(msgspec.Struct, frozen=True):
    """One stage's durations: cumulative counts per upper bound (``buckets`` order), then +Inf."""

    cumulative: list[int]
    count: int
    sum: float


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    imports: dict[str, int]  # every status, zero included
    failures: dict[str, int]  # failed imports by error code
    rows: dict[str, int]  # row outcomes summed over done imports that were not dry runs
    last_rows_per_second: float | None  # the most recently finished import's throughput
    stages: dict[str, StageHistogram]
    queue_jobs: dict[tuple[str, str], int]  # jobs by (entrypoint, queued | picked)
    oldest_job_heartbeat_seconds: float  # of the stalest picked job, any entrypoint; 0 with none
    workers_alive: int
    head_seq: int
    checkpoint_tree_size: int | None
    checkpoint_age_seconds: float | None  # since the latest checkpoint was signed
    unsigned_seconds: float  # since the oldest batch no checkpoint covers was committed; 0 if none
    quarantine_open: dict[str, int]  # open items by reason
    quarantine_oldest_open_seconds: float | None
    # Connectors' syncs by how they ended (running included), and the oldest a registered,
    # scheduled source's latest ended sync is (None with no scheduled source).
    connector_syncs: dict[str, int]
    connector_stalest_sync_seconds: float | None


# Imports by status (the failed ones by error code too) and the done ones' rows: one scan.
_IMPORTS = """
SELECT status, CASE WHEN status = 'failed' THEN coalesce(error ->> 'code', 'unknown') END AS code, count(*) AS n,
       coalesce(sum(rows_committed) FILTER (WHERE status = 'done' AND NOT dry_run), 0) AS committed,
       coalesce(sum(rows_duplicate) FILTER (WHERE status = 'done' AND NOT dry_run), 0) AS duplicate,
       coalesce(sum(rows_quarantined) FILTER (WHERE status = 'done' AND NOT dry_run), 0) AS quarantined
FROM imports GROUP BY 1, 2
"""

# The latest finished import among the latest submitted (an index walk, not a sort of them all):
# one that finishes after a hundred newer ones were submitted is not "the latest" anyway.
_LAST_THROUGHPUT = """
SELECT rows_total / greatest(extract(epoch FROM finished_at - started_at)::float8, 0.001)
FROM (SELECT status, rows_total, started_at, finished_at FROM imports ORDER BY created_at DESC LIMIT 100) i
WHERE status = 'done' AND started_at IS NOT NULL AND finished_at IS NOT NULL
ORDER BY finished_at DESC LIMIT 1
"""

# The stage figures grouped by how many bucket bounds are at or above them ($2: the bounds
# negated and reversed, so that width_bucket counts the bounds >= v: v <= le, Prometheus's own
# rule). One pass over the imports whatever the number of buckets; Python makes them cumulative.
_STAGES = """
SELECT s.key AS stage, width_bucket(-(s.value::float8), $2::float8[]) AS above, count(*) AS n,
       sum(s.value::float8) AS total
FROM imports i CROSS JOIN LATERAL jsonb_each(i.stage_seconds) s
WHERE i.stage_seconds IS NOT NULL AND s.key = ANY($1::text[]) AND jsonb_typeof(s.value) = 'number'
GROUP BY 1, 2
"""

# Every entrypoint (imports, connectors' syncs): a job of either kind can wait or get stuck.
_QUEUE = """
SELECT entrypoint, status::text AS state, count(*) AS n,
       coalesce(max(extract(epoch FROM now() - heartbeat)::float8) FILTER (WHERE status = 'picked'), 0) AS oldest
FROM pgqueuer WHERE status IN ('queued', 'picked') GROUP BY entrypoint, status
"""

_WORKERS = "SELECT count(*) FROM workers WHERE last_heartbeat >= now() - make_interval(secs => $1)"

_CHAIN = """
SELECT h.seq AS head_seq, c.tree_size, extract(epoch FROM now() - c.created_at)::float8 AS age,
       (SELECT extract(epoch FROM now() - min(b.committed_at))::float8 FROM ledger_batches b
        WHERE b.seq > coalesce((SELECT max(tree_size) FROM checkpoints), 0)) AS unsigned
FROM ledger_head h
LEFT JOIN LATERAL (SELECT tree_size, created_at FROM checkpoints ORDER BY id DESC LIMIT 1) c ON true
WHERE h.id = 1
"""

# The head is past every signed checkpoint.
_HEAD_UNSIGNED = """
SELECT h.seq > coalesce((SELECT max(tree_size) FROM checkpoints), 0) FROM ledger_head h WHERE h.id = 1
"""


_CONNECTOR_SYNCS = "SELECT status, count(*) AS n FROM connector_syncs GROUP BY status"
# For each scheduled source, the age of its latest ended sync (or of its registration, before
# its first): the stalest of them says whether the schedules still run.
_CONNECTOR_STALEST = """
SELECT max(extract(epoch FROM clock_timestamp() - coalesce(
           (SELECT max(s.finished_at) FROM connector_syncs s WHERE s.connector = c.name), c.created_at)))
  FROM connectors c WHERE c.scheduled AND c.schedule IS NOT NULL
"""


async def read_snapshot(conn: Conn, *, buckets: tuple[float, ...], heartbeat_timeout_seconds: float) -> Snapshot:
    """Every database fact GET /metrics reports, read in one consistent snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}")
        imports = dict.fromkeys(statuses.STATUSES, 0)
        failures: dict[str, int] = {}
        rows = dict.fromkeys(OUTCOMES, 0)
        for r in await conn.fetch(_IMPORTS):
            imports[r["status"]] = imports.get(r["status"], 0) + int(r["n"])
            if r["code"] is not None:
                failures[r["code"]] = int(r["n"])
            for outcome in OUTCOMES:
                rows[outcome] += int(r[outcome])
        throughput = await conn.fetchval(_LAST_THROUGHPUT)
        stages = _histograms(await conn.fetch(_STAGES, list(STAGES), [-b for b in reversed(buckets)]), len(buckets))
        queue = {(IMPORT_ENTRYPOINT, "queued"): 0, (IMPORT_ENTRYPOINT, "picked"): 0}
        oldest_job = 0.0
        for r in await conn.fetch(_QUEUE):
            queue[(str(r["entrypoint"]), str(r["state"]))] = int(r["n"])
            oldest_job = max(oldest_job, float(r["oldest"]))
        alive = int(await conn.fetchval(_WORKERS, float(heartbeat_timeout_seconds)))
        chain = await conn.fetchrow(_CHAIN)
        assert chain is not None, "ledger_head row missing: run migrations"
        quarantine = await open_by_reason(conn)
        syncs = {str(r["status"]): int(r["n"]) for r in await conn.fetch(_CONNECTOR_SYNCS)}
        stalest = await conn.fetchval(_CONNECTOR_STALEST)
    return Snapshot(
        imports=imports,
        failures=failures,
        rows=rows,
        last_rows_per_second=None if throughput is None else float(throughput),
        stages=stages,
        queue_jobs=queue,
        oldest_job_heartbeat_seconds=oldest_job,
        workers_alive=alive,
        head_seq=int(chain["head_seq"]),
        checkpoint_tree_size=None if chain["tree_size"] is None else int(chain["tree_size"]),
        checkpoint_age_seconds=None if chain["age"] is None else float(chain["age"]),
        unsigned_seconds=float(chain["unsigned"] or 0.0),
        quarantine_open={reason: count for reason, count, _ in quarantine},
        quarantine_oldest_open_seconds=min((age for _, _, age in quarantine), default=None),
        connector_syncs=syncs,
        connector_stalest_sync_seconds=None if stalest is None else float(stalest),
    )


def _histograms(groups: list[asyncpg.Record], bounds: int) -> dict[str, StageHistogram]:
    """Cumulative bucket counts from (stage, bounds at or above the value, count, sum) groups."""
    above: dict[str, list[int]] = {}
    totals: dict[str, float] = {}
    for g in groups:
        stage, k, n, total = str(g["stage"]), int(g["above"]), int(g["n"]), float(g["total"])
        above.setdefault(stage, [0] * (bounds + 1))[k] += n
        totals[stage] = totals.get(stage, 0.0) + total
    result: dict[str, StageHistogram] = {}
    for stage, by_above in above.items():
        # Bucket j (ascending bounds) holds every value with more than bounds - 1 - j bounds >= it.
        cumulative = [sum(by_above[bounds - j :]) for j in range(bounds)]
        count = sum(by_above)
        result[stage] = StageHistogram(cumulative=[*cumulative, count], count=count, sum=totals[stage])
    return result


async def head_unsigned(conn: Executor) -> bool:
    """Whether the chain has a batch no signed checkpoint covers yet."""
    return bool(await conn.fetchval(_HEAD_UNSIGNED))
