"""Whether the service can do its work now: the database, its schema, and live workers.

Readiness means an import submitted now would be processed: the database answers, its schema
is the code's, and at least one worker has beaten within the heartbeat timeout (a dead worker
used to leave /health/ready at 200 while imports waited forever).
"""

from __future__ import annotations

import msgspec

from ledger.config import Settings
from ledger.db import workers
from ledger.db.faults import is_unavailable
from ledger.db.migrate import current_revision, head_revision
from ledger.db.pool import Executor
from ledger.db.workers import QueueDepth

__all__ = ["Readiness", "WorkersReport", "readiness", "workers_report"]


class Readiness(msgspec.Struct, frozen=True, omit_defaults=True):
    status: str  # ok | unavailable
    code: str | None = None
    message: str | None = None
    migration: str | None = None
    workers_alive: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class WorkerView(msgspec.Struct, frozen=True):
    id: str
    hostname: str
    pid: int
    started_at: str
    last_heartbeat: str
    alive: bool
    running: list[str]


class WorkersReport(msgspec.Struct, frozen=True):
    ready: bool
    heartbeat_timeout_seconds: int
    workers: list[WorkerView]
    queue: QueueDepth


async def readiness(db: Executor, settings: Settings) -> Readiness:
    expected = head_revision()
    try:
        current = await current_revision(db)
        alive = await workers.alive_count(db, settings.job_heartbeat_timeout_seconds) if current == expected else 0
    except Exception as exc:
        if not is_unavailable(exc) and not _is_missing_schema(exc):
            raise
        return Readiness(status="unavailable", code="database_unreachable", message=str(exc) or type(exc).__name__)
    if current != expected:
        return Readiness(
            status="unavailable",
            code="migrations_pending",
            message=f"schema at {current}, code expects {expected}: run `ledger migrate`",
        )
    if alive == 0:
        return Readiness(
            status="unavailable",
            code="no_worker",
            message=f"no worker has sent a heartbeat in the last {settings.job_heartbeat_timeout_seconds} s: "
            "imports would wait; start one (`ledger worker`) or see `ledger status`",
            migration=current,
            workers_alive=0,
        )
    return Readiness(status="ok", migration=current, workers_alive=alive)


def _is_missing_schema(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == "42P01"  # undefined_table: not migrated at all


async def workers_report(db: Executor, settings: Settings) -> WorkersReport:
    timeout = settings.job_heartbeat_timeout_seconds
    rows = await workers.list_workers(db, timeout)
    return WorkersReport(
        ready=any(row.alive for row in rows),
        heartbeat_timeout_seconds=timeout,
        workers=[
            WorkerView(
                id=str(row.id),
                hostname=row.hostname,
                pid=row.pid,
                started_at=row.started_at.isoformat(),
                last_heartbeat=row.last_heartbeat.isoformat(),
                alive=row.alive,
                running=[str(i) for i in row.running],
            )
            for row in rows
        ],
        queue=await workers.queue_depth(db),
    )
