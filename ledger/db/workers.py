"""The worker registry: who is alive, what each is running, and what waits in the queue.

Readiness and `ledger status` read it; nothing else depends on it (the queue re-picks a dead
worker's job from pgqueuer's own heartbeats). A worker that stops cleanly deletes its row; a
killed one's row goes stale and is swept by the next worker to start.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from ledger.db import import_statuses as statuses
from ledger.db.pool import Executor

__all__ = ["QueueDepth", "WorkerRow", "alive_count", "beat", "list_workers", "queue_depth", "register", "unregister"]

# A row this much older than the heartbeat timeout belongs to a worker that is surely gone.
_SWEEP_AFTER_TIMEOUTS = 10


class WorkerRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    hostname: str
    pid: int
    started_at: datetime
    last_heartbeat: datetime
    running: list[uuid.UUID]
    alive: bool


class QueueDepth(msgspec.Struct, frozen=True):
    queued: int
    running: int
    retrying: int


async def register(conn: Executor, worker_id: uuid.UUID, *, hostname: str, pid: int, timeout_seconds: float) -> None:
    await conn.execute(
        "DELETE FROM workers WHERE last_heartbeat < now() - make_interval(secs => $1)",
        timeout_seconds * _SWEEP_AFTER_TIMEOUTS,
    )
    await conn.execute(
        "INSERT INTO workers (id, hostname, pid) VALUES ($1, $2, $3)",
        worker_id,
        hostname,
        pid,
    )


async def beat(conn: Executor, worker_id: uuid.UUID, running: list[uuid.UUID]) -> None:
    # An upsert, so a worker whose row was swept (a long pause) registers again.
    await conn.execute(
        """
        INSERT INTO workers (id, hostname, pid, running) VALUES ($1, '', 0, $2)
        ON CONFLICT (id) DO UPDATE SET last_heartbeat = now(), running = EXCLUDED.running
        """,
        worker_id,
        running,
    )


async def unregister(conn: Executor, worker_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM workers WHERE id = $1", worker_id)


async def alive_count(conn: Executor, timeout_seconds: float) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM workers WHERE last_heartbeat >= now() - make_interval(secs => $1)",
        float(timeout_seconds),
    )
    return int(count)


async def list_workers(conn: Executor, timeout_seconds: float) -> list[WorkerRow]:
    rows = await conn.fetch(
        """
        SELECT id, hostname, pid, started_at, last_heartbeat, running,
               last_heartbeat >= now() - make_interval(secs => $1) AS alive
        FROM workers ORDER BY started_at
        """,
        float(timeout_seconds),
    )
    return [WorkerRow(**dict(row)) for row in rows]


async def queue_depth(conn: Executor) -> QueueDepth:
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE {statuses.running()}) AS running,
               count(*) FILTER (WHERE status = 'retrying') AS retrying
        FROM imports WHERE {statuses.not_terminal()}
        """
    )
    assert row is not None
    return QueueDepth(queued=row["queued"], running=row["running"], retrying=row["retrying"])
