"""The worker: takes import jobs off the queue and runs the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import decisions, projection
from ledger.db.job_queue import IMPORT_ENTRYPOINT
from ledger.db.pool import connect, create_pool
from ledger.jobs.import_job import run_import
from ledger.logs import get_logger
from ledger.services.signing import configure_signing

__all__ = ["Worker", "run_worker", "running_worker"]

log = get_logger("ledger.worker")


class Worker:
    """One queue consumer: a LISTEN connection for pgqueuer and a pool for the pipeline."""

    def __init__(self, settings: Settings, database_url: str, policies: PolicyRegistry) -> None:
        self.settings = settings
        self.database_url = database_url
        self.policies = policies
        configure_signing(settings)  # every commit signs a checkpoint of its new head
        self._qm: QueueManager | None = None
        self._stopping = False
        self._conn: asyncpg.Connection[Any] | None = None
        self._pool: asyncpg.Pool[Any] | None = None

    async def run(self) -> None:
        self._conn = await connect(self.database_url)
        # Two connections a running import (its own, and the side one of its final step), and
        # one for the projector.
        self._pool = await create_pool(
            self.database_url, min_size=1, max_size=2 * self.settings.imports_running_max + 1
        )
        qm = QueueManager(Queries(AsyncpgDriver(self._conn)))
        self._qm = qm
        if self._stopping:  # asked to stop while connecting
            qm.shutdown.set()
        pool = self._pool
        # Set by every finished import and once now, for whatever a worker that died after its
        # commit did not get to: the projector applies the projection when it is set.
        wanted = asyncio.Event()
        wanted.set()

        @qm.entrypoint(IMPORT_ENTRYPOINT, concurrency_limit=self.settings.imports_running_max)
        async def import_manifest(job: Job) -> None:
            assert job.payload is not None
            import_id = uuid.UUID(job.payload.decode())
            async with pool.acquire() as conn:
                await run_import(conn, import_id, self.policies, self.settings, side=pool.acquire)
            # Applied by the worker's projector, not in this job: the job's slot is free for
            # the next import while the projection waits for (or follows) its final step.
            wanted.set()

        async with pool.acquire() as conn:
            await decisions.sweep_finished(conn)
        projector = asyncio.create_task(_projector(pool, wanted))
        log.info("worker_started", stage="worker")
        heartbeat = timedelta(seconds=self.settings.job_heartbeat_timeout_seconds)
        try:
            # A job whose worker died (kill -9, lost host) keeps status 'picked' and stops
            # beating; pgqueuer's dequeue re-picks a picked job whose heartbeat is older than
            # heartbeat_timeout. Nothing announces a stale job, so dequeue also polls at least
            # that often. The pipeline then resumes from the import's checkpoint.
            await qm.run(
                dequeue_timeout=min(timedelta(seconds=5), heartbeat),
                batch_size=1,
                heartbeat_timeout=heartbeat,
            )
        finally:
            projector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await projector
            await self._pool.close()
            await self._conn.close()

    def stop(self) -> None:
        self._stopping = True
        if self._qm is not None:
            self._qm.shutdown.set()


async def _projector(pool: asyncpg.Pool[Any], wanted: asyncio.Event) -> None:
    """One per worker: applies the projection whenever a commit asked for it, one run at a time
    (a run that starts after several commits applies them all)."""
    while True:
        await wanted.wait()
        wanted.clear()
        try:
            async with pool.acquire() as conn:
                await projection.apply_pending(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # A failure loses nothing (the watermark stays where it was): try again shortly.
            log.exception("projection_failed", stage="projection")
            await asyncio.sleep(1.0)
            wanted.set()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, database_url: str, policies: PolicyRegistry) -> AsyncIterator[None]:
    """A worker inside this process for as long as the context lasts (tests, demos)."""
    worker = Worker(settings, database_url, policies)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


def run_worker(settings: Settings, database_url: str) -> None:
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    worker = Worker(settings, database_url, policies)
    asyncio.run(worker.run())
