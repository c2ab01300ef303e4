"""The worker: takes import jobs off the queue and runs them; stops by handing them back.

A stop (SIGTERM from `ledger serve`, a supervisor or a deploy) cancels the running imports at
once and gives each back to the queue (pgqueuer's RetryRequested with no delay): the next
worker to start resumes it from its staging checkpoint. Before, a stop cancelled the job
itself, which left the queue while its import stayed `validating` for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from opentelemetry import context, trace
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job, Schedule
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.sm import SchedulerManager

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import import_decisions as decisions
from ledger.db import imports as imports_db
from ledger.db import metrics_stages, projection, workers
from ledger.db.job_queue import CONNECTOR_ENTRYPOINT, CONNECTOR_SCHEDULE_ENTRYPOINT, IMPORT_ENTRYPOINT
from ledger.db.pool import connect, create_pool
from ledger.jobs import spool_janitor
from ledger.jobs.checkpoint_timer import run_checkpoint_timer
from ledger.jobs.import_job import run_import_job
from ledger.jobs.retry import RetryPolicy, RetryRequested
from ledger.logs import get_logger
from ledger.services import connectors
from ledger.services.signing import load_signing
from ledger.telemetry import tracing

__all__ = ["APPLICATION_NAME", "Worker", "run_worker", "running_worker"]

log = get_logger("ledger.worker")
tracer = trace.get_tracer(__name__)

# How the worker's connections show in pg_stat_activity (an import's own connection is renamed
# `ledger-import:<task id>` while it runs).
APPLICATION_NAME = "ledger-worker"


class Worker:
    """One queue consumer: a LISTEN connection for pgqueuer and a pool for the imports."""

    def __init__(self, settings: Settings, database_url: str, policies: PolicyRegistry) -> None:
        self.settings = settings
        self.database_url = database_url
        self.policies = policies
        self.retry = RetryPolicy.from_settings(settings)
        self.id = uuid.uuid4()
        self.signing = load_signing(settings)  # every commit signs a checkpoint of its new head
        self._qm: QueueManager | None = None
        self._stopping = False
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        # Set when the queue's own connection died (PostgreSQL restarted, say): the worker then
        # stops and exits non-zero, and whoever supervises it starts a fresh one.
        self.lost_database = False
        self.registered = asyncio.Event()  # set once the worker is in the registry (ready)

    @property
    def heartbeat_seconds(self) -> float:
        # Three beats a timeout: one lost beat never makes a live worker look dead.
        return max(self.settings.job_heartbeat_timeout_seconds / 3, 0.5)

    async def run(self) -> None:
        conn = await connect(self.database_url, application_name=APPLICATION_NAME)
        # Two connections a running import (its own, and the side one of its final step), one
        # for the projector and one for the heartbeat.
        pool = await create_pool(
            self.database_url,
            min_size=1,
            # A connector's sync holds one more for as long as it runs (its source's lock), and
            # as many syncs as imports may run at once; the checkpoint timer takes one at times.
            max_size=3 * self.settings.imports_running_max + 3,
            application_name=APPLICATION_NAME,
        )
        try:
            await self._run(conn, pool)
        finally:
            await pool.close()
            await conn.close()

    async def _run(self, conn: asyncpg.Connection[Any], pool: asyncpg.Pool[Any]) -> None:
        qm = QueueManager(Queries(AsyncpgDriver(conn)))
        self._qm = qm
        if self._stopping:  # asked to stop while connecting
            qm.shutdown.set()
        # Set by every finished import and once now, for whatever a worker that died after its
        # commit did not get to: the projector applies the projection when it is set.
        wanted = asyncio.Event()
        wanted.set()
        # The spans of the imports whose commits the next projection run applies (its links).
        applied: list[trace.Link] = []

        @qm.entrypoint(IMPORT_ENTRYPOINT, concurrency_limit=self.settings.imports_running_max)
        async def import_manifest(job: Job) -> None:
            assert job.payload is not None
            import_id = uuid.UUID(job.payload.decode())
            # The import's span continues the trace of the request that recorded it.
            parent, attributes = await _import_trace(pool, import_id)
            with tracer.start_as_current_span(
                "import", context=parent, kind=trace.SpanKind.CONSUMER, attributes=attributes
            ) as span:
                await self._import(pool, import_id)
            if span.get_span_context().is_valid:
                applied.append(trace.Link(span.get_span_context()))
            # Applied by the worker's projector, not in this job: the job's slot is free for
            # the next import while the projection waits for (or follows) its final step.
            wanted.set()

        # Connectors' syncs: one job per source at most (its dedupe key), and one sync per
        # source across every worker (its advisory lock); a sync that fails is recorded failed
        # and ends its job, so one source never stops another.
        @qm.entrypoint(CONNECTOR_ENTRYPOINT, concurrency_limit=self.settings.imports_running_max)
        async def sync_connector(job: Job) -> None:
            assert job.payload is not None
            name, _, requested_by = job.payload.decode().partition("\n")
            await connectors.run_worker_sync(
                pool,
                self.settings,
                self.policies,
                name,
                requested_by=uuid.UUID(requested_by) if requested_by else None,
            )

        timeout = self.settings.job_heartbeat_timeout_seconds
        await workers.register(pool, self.id, hostname=socket.gethostname(), pid=os.getpid(), timeout_seconds=timeout)
        self.registered.set()
        async with pool.acquire() as c:
            await decisions.sweep_finished(c)
        background = [
            asyncio.create_task(_projector(pool, wanted, applied)),
            asyncio.create_task(self._beat(pool, conn)),
            asyncio.create_task(spool_janitor.run_janitor(pool, self.settings)),
            asyncio.create_task(run_checkpoint_timer(pool, self.settings, self.signing)),
            asyncio.create_task(self._schedule(pool)),
        ]
        log.info("worker_started", stage="worker", worker_id=str(self.id), pid=os.getpid())
        heartbeat = timedelta(seconds=timeout)
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
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):
                await workers.unregister(pool, self.id)
            log.info("worker_stopped", stage="worker", worker_id=str(self.id), pid=os.getpid())

    async def _import(self, pool: asyncpg.Pool[Any], import_id: uuid.UUID) -> None:
        """Run one import as a task of its own, so that a stop can cancel it and hand it back."""
        task = asyncio.create_task(
            run_import_job(pool, import_id, self.policies, self.settings, self.retry, self.signing)
        )
        self._running[import_id] = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not self._stopping or (current is not None and current.cancelling()):
                raise  # the job itself was cancelled: not ours to hand back
            # Nothing of an unfinished import is committed (its final step is one
            # transaction), so it can go back as it is, with its checkpoint.
            with contextlib.suppress(Exception):
                await imports_db.hand_back(pool, import_id)
            log.info("import_handed_back", stage="worker", task_id=str(import_id))
            raise RetryRequested(delay=timedelta(0), reason="worker stopping") from None
        finally:
            self._running.pop(import_id, None)

    async def _schedule(self, pool: asyncpg.Pool[Any]) -> None:
        """pgqueuer's scheduler, on a connection of its own: once a minute one worker (the
        schedules table decides which) queues the registered sources whose cron fell due."""
        conn = await connect(self.database_url, application_name=APPLICATION_NAME)
        sm = SchedulerManager(Queries(AsyncpgDriver(conn)))

        @sm.schedule(CONNECTOR_SCHEDULE_ENTRYPOINT, "* * * * *")
        async def due_connectors(schedule: Schedule) -> None:
            due = await connectors.run_scheduled(pool, datetime.now(UTC))
            if due:
                log.info("connector_syncs_due", stage="connectors", connectors=due)

        try:
            await sm.run()
        except asyncio.CancelledError:
            sm.shutdown.set()
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            # Schedules are a convenience: the worker goes on taking jobs without them.
            log.exception("scheduler_failed", stage="connectors")
        finally:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _beat(self, pool: asyncpg.Pool[Any], queue_conn: asyncpg.Connection[Any]) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            if queue_conn.is_closed():
                # pgqueuer would wait on a dead LISTEN connection for good.
                log.error("queue_connection_lost", stage="worker", worker_id=str(self.id))
                self.lost_database = True
                self.stop()
                return
            try:
                await workers.beat(pool, self.id, list(self._running))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                log.warning("heartbeat_failed", stage="worker", worker_id=str(self.id))

    def stop(self) -> None:
        """Stop taking jobs and hand the running ones back (safe from a signal handler)."""
        if self._stopping:
            return
        self._stopping = True
        log.info("worker_stopping", stage="worker", running=[str(i) for i in self._running])
        if self._qm is not None:
            self._qm.shutdown.set()
        for task in self._running.values():
            task.cancel()


async def _import_trace(
    pool: asyncpg.Pool[Any], import_id: uuid.UUID
) -> tuple[context.Context | None, dict[str, str | bool]]:
    """The trace an import's span continues (its request's, from ``imports.trace_context``) and
    the span's attributes; read only when tracing is on."""
    attributes: dict[str, str | bool] = {"ledger.task_id": str(import_id)}
    if not tracing.enabled():
        return None, attributes
    record = await imports_db.get_import(pool, import_id)
    if record is None:
        return None, attributes
    attributes.update({"ledger.lab": record.lab, "ledger.policy": record.policy_name, "ledger.dry_run": record.dry_run})
    return tracing.parent_context(record.trace_context), attributes


async def _projector(pool: asyncpg.Pool[Any], wanted: asyncio.Event, applied: list[trace.Link]) -> None:
    """One per worker: applies the projection whenever a commit asked for it, one run at a time
    (a run that starts after several commits applies them all). Its span links to the spans of
    the imports it applies: one run may apply several, so it is the child of none."""
    while True:
        await wanted.wait()
        wanted.clear()
        links = applied[:]
        applied.clear()
        try:
            with tracer.start_as_current_span("projection", links=links):
                async with pool.acquire() as conn:
                    started, before = time.perf_counter(), await projection.projection_state(conn)
                    if await projection.apply_pending(conn):
                        # The imports it made current get the run's time (GET /metrics, stage "projection").
                        await metrics_stages.record_projection(conn, before.applied_seq, time.perf_counter() - started)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            applied[:0] = links  # the next run applies them
            # A failure loses nothing (the watermark stays where it was): try again shortly.
            log.exception("projection_failed", stage="projection")
            await asyncio.sleep(1.0)
            wanted.set()


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, database_url: str, policies: PolicyRegistry) -> AsyncIterator[Worker]:
    """A worker inside this process for as long as the context lasts (tests, demos)."""
    worker = Worker(settings, database_url, policies)
    task = asyncio.create_task(worker.run())
    # Ready (in the registry) before the app serves its first request, as a started `ledger
    # worker` would be by then.
    registered = asyncio.create_task(worker.registered.wait())
    await asyncio.wait([task, registered], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    registered.cancel()
    if task.done():
        task.result()  # it failed to start: say why
    try:
        yield worker
    finally:
        worker.stop()
        try:
            await asyncio.wait_for(task, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()


def run_worker(settings: Settings, database_url: str) -> bool:
    """Run a worker until SIGTERM or SIGINT, which stop it gracefully (a second one kills).
    False when it stopped because it lost the database."""
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    worker = Worker(settings, database_url, policies)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _on_signal, worker, loop)
        await worker.run()

    asyncio.run(main())
    return not worker.lost_database


def _on_signal(worker: Worker, loop: asyncio.AbstractEventLoop) -> None:
    if worker._stopping:
        # Asked twice: the operator means it. The job is re-picked after its heartbeat.
        os._exit(130)
    worker.stop()
