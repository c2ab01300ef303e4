"""``GET /metrics``: the Prometheus exposition of one API process (docs/metrics.md).

Two sources, and no multiprocess mode:

- the database's facts (imports, rows, stage durations, the queue, the workers, the chain and
  its checkpoints, the quarantine), read at scrape time by ``DatabaseCollector`` from one
  snapshot (ledger.db.metrics), cached for ``LEDGER_METRICS_CACHE_SECONDS``. Workers write what
  they did into the database, so their work reaches the scrape without a file per process and
  survives their restarts; every API process reports the same figures;
- this process's own: HTTP latency by route template (fed by ledger.api.access_log), and the
  verifications it ran (ledger.services.verification keeps the tally).

No label holds an id, a path or a lab: routes are templates, every other label comes from a
closed vocabulary (statuses, outcomes, stages, reasons, error codes), so the number of series
is bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import asyncpg
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from ledger.config import Settings
from ledger.core.review import REASONS
from ledger.db import import_statuses as statuses
from ledger.db.faults import is_unavailable
from ledger.db.metrics import OUTCOMES, STAGES, Snapshot, read_snapshot
from ledger.logs import get_logger
from ledger.services import verification

__all__ = ["CONTENT_TYPE", "HTTP_BUCKETS", "MEDIA_TYPE", "METRIC_NAMES", "STAGE_BUCKETS", "Metrics"]

log = get_logger("ledger.metrics")

# The classic text format: every Prometheus since 2.0 parses it (newer clients default to 1.0.0).
# Litestar adds the charset to a text/* media type itself.
MEDIA_TYPE = "text/plain; version=0.0.4"
CONTENT_TYPE = f"{MEDIA_TYPE}; charset=utf-8"

# Seconds: a small manifest's stage takes milliseconds, a 100 MB one's minutes.
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# A method outside these is labelled "other": the method is whatever a client sent.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_VERIFY_RESULTS = ("intact", "tampered", "error")
_SYNC_STATUSES = ("running", "ok", "partial", "failed")
# A scrape answers within Prometheus's default scrape timeout (10 s) even when the database
# does not: a connection that cannot be made in time counts as the database being down.
SNAPSHOT_TIMEOUT_SECONDS = 8.0
# What a snapshot may fail with when the database is away, slow (statement_timeout) or busy.
_DATABASE_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_Family = TypeVar("_Family", GaugeMetricFamily, CounterMetricFamily)

# Every metric family this module exports, as PromQL names it (counters with _total; a
# histogram's series add _bucket, _sum and _count). tests/ops holds the rules and the
# dashboard to this list.
METRIC_NAMES = (
    "ledger_database_up",
    "ledger_metrics_snapshot_seconds",
    "ledger_imports",
    "ledger_imports_finished_total",
    "ledger_import_failures_total",
    "ledger_import_rows_total",
    "ledger_import_last_rows_per_second",
    "ledger_import_stage_seconds",
    "ledger_queue_jobs",
    "ledger_job_oldest_heartbeat_age_seconds",
    "ledger_job_heartbeat_timeout_seconds",
    "ledger_workers_alive",
    "ledger_chain_head_seq",
    "ledger_checkpoint_tree_size",
    "ledger_checkpoint_age_seconds",
    "ledger_checkpoint_unsigned_seconds",
    "ledger_checkpoint_interval_seconds",
    "ledger_quarantine_open_items",
    "ledger_connector_syncs",
    "ledger_connector_stalest_sync_age_seconds",
    "ledger_quarantine_oldest_open_age_seconds",
    "ledger_verification_runs_total",
    "ledger_verification_last_ok",
    "ledger_verification_last_run_timestamp_seconds",
    "ledger_http_request_duration_seconds",
)


class DatabaseCollector(Collector):
    """The database's facts as of the last snapshot, and the verifications this process ran.

    ``collect`` is synchronous (prometheus_client calls it while rendering), so the snapshot is
    read beforehand by ``refresh``, at most once per ``cache_seconds``, one refresh at a time."""

    def __init__(self, settings: Settings, pool: Callable[[], asyncpg.Pool[Any]]) -> None:
        self._settings = settings
        self._pool = pool
        self._snapshot: Snapshot | None = None
        self._read_at = float("-inf")
        self._read_seconds = 0.0
        self._up = False
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self._settings.metrics_cache_seconds:
                return
            started = time.perf_counter()
            try:
                async with asyncio.timeout(SNAPSHOT_TIMEOUT_SECONDS), self._pool().acquire() as conn:
                    self._snapshot = await read_snapshot(
                        conn,
                        buckets=STAGE_BUCKETS,
                        heartbeat_timeout_seconds=self._settings.job_heartbeat_timeout_seconds,
                    )
                self._up = True
            except Exception as exc:
                # The process's own metrics still go out, with ledger_database_up 0; stale
                # database figures would hide the outage, so none are reported.
                if not is_unavailable(exc) and not isinstance(exc, _DATABASE_FAILURES):
                    raise
                log.warning("metrics_snapshot_failed", stage="metrics", error=type(exc).__name__)
                self._snapshot, self._up = None, False
            self._read_seconds = time.perf_counter() - started
            self._read_at = time.monotonic()

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check against other collectors: the names are this module's own

    def collect(self) -> Iterator[Metric]:
        yield _gauge("ledger_database_up", "1 when the last snapshot of the database succeeded", 1 if self._up else 0)
        yield _gauge("ledger_metrics_snapshot_seconds", "How long the last database snapshot took", self._read_seconds)
        yield _gauge(
            "ledger_job_heartbeat_timeout_seconds",
            "LEDGER_JOB_HEARTBEAT_TIMEOUT: a job or worker silent this long counts as lost",
            self._settings.job_heartbeat_timeout_seconds,
        )
        yield _gauge(
            "ledger_checkpoint_interval_seconds",
            "LEDGER_CHECKPOINT_INTERVAL_SECONDS: how often a worker signs an unsigned head",
            self._settings.checkpoint_interval_seconds,
        )
        yield from self._verifications()
        if self._snapshot is not None:
            yield from _database_metrics(self._snapshot)

    def _verifications(self) -> Iterator[Metric]:
        pool = self._pool()
        runs = CounterMetricFamily(
            "ledger_verification_runs",
            "Full verifications this API process finished, by result (intact, tampered, error)",
            labels=["result"],
        )
        done = verification.results(pool)
        for result in _VERIFY_RESULTS:
            runs.add_metric([result], done.get(result, 0))
        yield runs
        state = verification.state(pool)
        if state.report is not None and state.finished_at is not None:
            yield _gauge(
                "ledger_verification_last_ok",
                "1 when this process's last full verification found the ledger intact, 0 when not",
                1 if state.report.ok else 0,
            )
            yield _gauge(
                "ledger_verification_last_run_timestamp_seconds",
                "When this process's last full verification finished (Unix time)",
                state.finished_at.timestamp(),
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(family: _Family, label_values: Iterable[tuple[str, float]]) -> _Family:
    for label, value in label_values:
        family.add_metric([label], value)
    return family


def _database_metrics(s: Snapshot) -> Iterator[Metric]:
    yield _labelled(
        GaugeMetricFamily("ledger_imports", "Imports not ended yet, by status", labels=["status"]),
        [(status, s.imports.get(status, 0)) for status in statuses.ACTIVE],
    )
    # Imports are never deleted and an ended one never moves again: these only grow.
    yield _labelled(
        CounterMetricFamily("ledger_imports_finished", "Imports that ended, by status", labels=["status"]),
        [(status, s.imports.get(status, 0)) for status in statuses.TERMINAL],
    )
    yield _labelled(
        CounterMetricFamily("ledger_import_failures", "Failed imports by error code", labels=["code"]),
        sorted(s.failures.items()),
    )
    yield _labelled(
        CounterMetricFamily("ledger_import_rows", "Rows of done imports (not dry runs) by outcome", labels=["outcome"]),
        [(outcome, s.rows[outcome]) for outcome in OUTCOMES],
    )
    if s.last_rows_per_second is not None:
        yield _gauge(
            "ledger_import_last_rows_per_second",
            "Rows per second of the most recently finished import, start to finish",
            s.last_rows_per_second,
        )
    stages = HistogramMetricFamily(
        "ledger_import_stage_seconds", "Seconds each stage of an import took", labels=["stage"]
    )
    for stage in STAGES:
        histogram = s.stages.get(stage)
        cumulative = histogram.cumulative if histogram is not None else [0] * (len(STAGE_BUCKETS) + 1)
        bounds = [*(_bound(b) for b in STAGE_BUCKETS), "+Inf"]
        stages.add_metric(
            [stage], list(zip(bounds, cumulative, strict=True)), histogram.sum if histogram is not None else 0.0
        )
    yield stages
    jobs = GaugeMetricFamily(
        "ledger_queue_jobs",
        "Jobs in the queue by entrypoint: queued, or picked by a worker",
        labels=["entrypoint", "state"],
    )
    for (entrypoint, state), n in sorted(s.queue_jobs.items()):
        jobs.add_metric([entrypoint, state], n)
    yield jobs
    yield _gauge(
        "ledger_job_oldest_heartbeat_age_seconds",
        "Seconds since the stalest running job last beat (0 with none running)",
        s.oldest_job_heartbeat_seconds,
    )
    yield _gauge("ledger_workers_alive", "Workers that beat within the heartbeat timeout", s.workers_alive)
    yield _gauge("ledger_chain_head_seq", "Sequence number of the chain's head batch", s.head_seq)
    if s.checkpoint_tree_size is not None and s.checkpoint_age_seconds is not None:
        yield _gauge("ledger_checkpoint_tree_size", "Tree size of the latest signed checkpoint", s.checkpoint_tree_size)
        yield _gauge(
            "ledger_checkpoint_age_seconds", "Seconds since the latest checkpoint was signed", s.checkpoint_age_seconds
        )
    yield _gauge(
        "ledger_checkpoint_unsigned_seconds",
        "Seconds since the oldest batch no signed checkpoint covers was committed (0: the head is signed)",
        s.unsigned_seconds,
    )
    yield _labelled(
        GaugeMetricFamily("ledger_quarantine_open_items", "Open quarantine items by reason", labels=["reason"]),
        [(reason, s.quarantine_open.get(reason, 0)) for reason in sorted(REASONS | s.quarantine_open.keys())],
    )
    yield _gauge(
        "ledger_quarantine_oldest_open_age_seconds",
        "Seconds since the oldest open quarantine item was quarantined (0 with none open)",
        s.quarantine_oldest_open_seconds or 0.0,
    )
    yield _labelled(
        GaugeMetricFamily(
            "ledger_connector_syncs", "Connectors' syncs by status (running, ok, partial, failed)", labels=["status"]
        ),
        [(status, s.connector_syncs.get(status, 0)) for status in _SYNC_STATUSES],
    )
    yield _gauge(
        "ledger_connector_stalest_sync_age_seconds",
        "Of the scheduled sources, the longest since one's latest sync ended or it was registered (0 with none)",
        s.connector_stalest_sync_seconds or 0.0,
    )


def _bound(value: float) -> str:
    return repr(float(value))


class Metrics:
    """One API process's metrics: its own registry (never the global one, so that several apps
    in one process, as in the tests, do not share or clash), rendered by ``scrape``."""

    def __init__(self, settings: Settings, pool: Callable[[], asyncpg.Pool[Any]]) -> None:
        self.registry = CollectorRegistry()
        self._database = DatabaseCollector(settings, pool)
        self.registry.register(self._database)
        self._http = Histogram(
            "ledger_http_request_duration_seconds",
            "HTTP requests' duration in this API process, by method, route template and status class",
            ["method", "route", "status_class"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def observe_http(self, method: str | None, route: str, status: int, seconds: float) -> None:
        """One request: ``route`` is its template (or the access log's "unmatched"), never its path."""
        method = method if method in _METHODS else "other"
        self._http.labels(method, route, f"{status // 100}xx").observe(seconds)

    async def scrape(self) -> bytes:
        await self._database.refresh()
        return generate_latest(self.registry)
