"""`ledger bench-load`: lab managers, compliance officers and auditors at once, through Locust.

It starts its own `ledger serve` on 127.0.0.1 (on a fresh embedded PostgreSQL under a
temporary LEDGER_HOME, the service's default settings; LEDGER_DATABASE_URL is not passed on),
registers a lab and makes a token for each user, imports the 100,000-row sample once (not
measured, so that the queue, the chain and the checkpoints are not empty), then runs Locust
headless in this process for ``duration`` seconds with the users of ledger.bench.locustfile.

Figures, from the requests as Locust's users saw them (and the server's own time for each
request, from its access log, beside them):

- rows per minute: the rows (committed + duplicate + quarantined, i.e. every row of the
  manifest) of the uploads whose import ended ``done`` during the run, over the time from the
  first upload's first request to the last of those imports' end;
- p95 of every request that is not an import's (uploads and polls of the import are left out):
  per endpoint, and all of them together;
- the failure ratio: failed requests (an answer other than the expected one, a connection
  error, an exception in the user's code) and imports that did not end ``done``, over all
  requests and imports.

The command exits 1 when a threshold does not hold: fewer than 50,000 rows a minute, a p95 of
the non-import requests over 300 ms, or a failure ratio over 1%.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import psutil

from ledger.bench.manifest import write_manifest
from ledger.bench.run import _free_port, _wait_postmaster_gone

if TYPE_CHECKING:  # importing it imports Locust, which patches the standard library
    from ledger.bench.locustfile import Plan

__all__ = ["BenchLoadError", "Figures", "LoadResult", "Threshold", "check_host", "render_table", "run_load_bench"]

LAB = "bench-lab"
POLICY = "lab-inventory"
ROWS = 100_000
# The upload page's chunk (ledger.web.controllers.imports.CHUNK_BYTES_MAX), so the server sees
# what a browser sends.
CHUNK_BYTES = 8 * 1024 * 1024
POLL_SECONDS = 0.5
LOOPBACK = ("127.0.0.1", "localhost")
ROWS_PER_MINUTE_MIN = 50_000
P95_MS_MAX = 300.0
FAILURE_RATIO_MAX = 0.01
ROLES = ("lab_manager", "compliance_officer", "auditor")
# Auditors prove the latest revision of these assets (one page of GET /assets).
_ASSETS_SAMPLED = 1_000


class BenchLoadError(RuntimeError):
    """The load test cannot run: Locust is missing, a host is not loopback, the service did
    not start."""


class Figures(msgspec.Struct, kw_only=True):
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None
    # The same requests' time on the server (its access log's duration_ms), p95.
    server_p95_ms: float | None = None


class Threshold(msgspec.Struct, kw_only=True):
    limit: float
    measured: float | None
    holds: bool


class LoadResult(msgspec.Struct, kw_only=True):
    machine: dict[str, Any]
    duration_seconds: float
    users: dict[str, int]
    waits_seconds: dict[str, list[float]]
    uploads: int
    imports_done: int
    imports_not_done: int  # ended failed or cancelled, or the upload failed
    imports_unfinished: int  # still running when the run ended (not counted)
    rows: int
    rows_committed: int
    rows_duplicate: int
    rows_quarantined: int
    rows_seconds: float  # from the first upload's first request to the last done import's end
    rows_per_minute: float
    import_seconds_p50: float | None  # one upload, from its first byte to the import's end
    import_seconds_max: float | None
    requests: int
    failures: int
    failure_ratio: float
    non_import: Figures
    endpoints: dict[str, Figures]
    verified: bool  # GET /audit/verify after the run
    verify_failure: Any
    thresholds: dict[str, Threshold]
    passed: bool


def check_host(host: str) -> str:
    """``host`` if it is the loopback address; BenchLoadError for any other."""
    if host not in LOOPBACK:
        raise BenchLoadError(f"the load test runs on this machine only: host must be one of {', '.join(LOOPBACK)}")
    return host


def _require_locust() -> None:
    try:
        import locust  # noqa: F401  (imported first: it patches the standard library for gevent)
    except ImportError as exc:
        raise BenchLoadError("Locust is not installed: pip install -e '.[load]'") from exc


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 1)


class _Service:
    """`ledger serve` on ``host`` on a fresh embedded PostgreSQL under ``home``, with the access
    log's lines (route template and duration) kept as they come."""

    def __init__(self, home: Path, host: str) -> None:
        self.home = home
        self.port = _free_port()
        self.base_url = f"http://{host}:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "LEDGER_DATABASE_URL"}
        env["LEDGER_HOME"] = str(home)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli.main", "serve", "--host", host, "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.requests: list[tuple[str, float]] = []
        self.admin = ""

    def start(self, timeout: float = 180) -> None:
        import gevent

        # Keep reading both pipes: a full one would block the server's logging.
        gevent.spawn(self._drain, self.proc.stderr, keep=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip().startswith("ldg_"):
                self.admin = line.strip()
            if "listening on" in line:
                break
        if not self.admin:
            raise BenchLoadError("the server stopped before it listened, or printed no first-start admin token")
        gevent.spawn(self._drain, self.proc.stdout, keep=False)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.base_url}/health/ready", timeout=5).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise BenchLoadError(f"the server was not ready after {timeout} s")
            time.sleep(0.1)

    def _drain(self, stream: Any, *, keep: bool) -> None:
        for line in stream:
            if keep and line.startswith("{") and '"http_request"' in line:
                with contextlib.suppress(msgspec.DecodeError, KeyError, TypeError):
                    event = msgspec.json.decode(line)
                    self.requests.append((f"{event['method']} {event['route']}", float(event["duration_ms"])))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        _wait_postmaster_gone(self.home / "pgdata")


@contextlib.contextmanager
def _running(home: Path, host: str) -> Iterator[_Service]:
    service = _Service(home, host)
    try:
        service.start()
        yield service
    finally:
        service.stop()


def _prepare(service: _Service, counts: dict[str, int], sample: Path) -> tuple[dict[str, list[str]], list[str], str]:
    """The lab, a token per user, and one import of the sample (waited for); the tokens by role,
    asset ids on the ledger, and that import's id."""
    with httpx.Client(
        base_url=service.base_url, headers={"Authorization": f"Bearer {service.admin}"}, timeout=300
    ) as admin:
        admin.post("/labs", json={"name": LAB, "title": "Load test"}).raise_for_status()
        tokens: dict[str, list[str]] = {}
        for role, count in counts.items():
            for n in range(max(count, 1)):
                body = {"role": role, "labs": [LAB] if role == "lab_manager" else [], "label": f"load {role} {n}"}
                created = admin.post("/tokens", json=body)
                created.raise_for_status()
                tokens.setdefault(role, []).append(created.json()["token"])
        with sample.open("rb") as fh:
            accepted = admin.post(
                "/imports",
                files={"file": (sample.name, fh, "text/csv")},
                data={"lab": LAB, "policy": POLICY},
                headers={"Idempotency-Key": f"load-warm-{uuid.uuid4().hex}"},
            )
        accepted.raise_for_status()
        task_id = str(accepted.json()["task_id"])
        deadline = time.monotonic() + 600
        # Until it has ended and, when done, GET /assets shows its rows (the projection follows the commit).
        while not _ended(status := admin.get(f"/imports/{task_id}").json()):
            if time.monotonic() > deadline:
                raise BenchLoadError("the first import of the sample did not end within 10 minutes")
            time.sleep(0.2)
        if status["status"] != "done":
            raise BenchLoadError(f"the first import of the sample ended {status['status']}: {status['error']}")
        assets = admin.get("/assets", params={"limit": _ASSETS_SAMPLED})
        assets.raise_for_status()
        asset_ids = [item["asset_id"] for item in assets.json()["items"]]
        if not asset_ids:
            raise BenchLoadError("GET /assets showed nothing after the first import")
    return tokens, asset_ids, task_id


def _ended(status: dict[str, Any]) -> bool:
    if status["status"] == "done":
        return status.get("assets_current") is not False
    return status["status"] in ("failed", "cancelled")


def _verify(service: _Service) -> tuple[bool, Any]:
    """Whether GET /audit/verify says the chain is intact once the imports the run left behind
    have ended; and, when not, what it answered."""
    with httpx.Client(
        base_url=service.base_url, headers={"Authorization": f"Bearer {service.admin}"}, timeout=600
    ) as admin:
        # Verified beside a commit, the chain can be reported broken when it is not (an entry of
        # a batch committed after the verification's snapshot): wait for the queue to drain.
        deadline = time.monotonic() + 600
        while sum((admin.get("/health/workers").json()["queue"]).values()) and time.monotonic() < deadline:
            time.sleep(0.2)
        response = admin.get("/audit/verify")
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    ok = response.status_code == 200 and isinstance(body, dict) and body.get("ok") is True
    return ok, None if ok else {"status": response.status_code, "body": body or response.text[:2000]}


class _Recorder:
    """Every request the users made (and every import), as Locust's request event reports it."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.failures: dict[str, int] = {}
        self.user_errors = 0

    def request(self, request_type: str, name: str, response_time: float, exception: Any, **_: Any) -> None:
        self.times.setdefault(name, []).append(float(response_time))
        if exception is not None:
            self.failures[name] = self.failures.get(name, 0) + 1

    def user_error(self, **_: Any) -> None:
        self.user_errors += 1


def _figures(times: list[float], failures: int, server: list[float] | None = None) -> Figures:
    return Figures(
        requests=len(times),
        failures=failures,
        p50_ms=_percentile(times, 0.5),
        p95_ms=_percentile(times, 0.95),
        max_ms=round(max(times), 1) if times else None,
        server_p95_ms=_percentile(server, 0.95) if server else None,
    )


def _run_locust(
    base_url: str,
    plan: Plan,
    counts: dict[str, int],
    waits: dict[str, tuple[float, float]],
    duration: float,
) -> tuple[_Recorder, float, float]:
    """Locust headless for ``duration`` seconds; what it recorded, and when it started and stopped
    (time.monotonic())."""
    import gevent
    from locust.env import Environment

    from ledger.bench.locustfile import bind

    recorder = _Recorder()
    env = Environment(user_classes=bind(plan, counts, waits), host=base_url, catch_exceptions=True)
    env.events.request.add_listener(recorder.request)  # type: ignore[no-untyped-call]
    env.events.user_error.add_listener(recorder.user_error)  # type: ignore[no-untyped-call]
    runner = env.create_local_runner()
    users = sum(counts.values())
    started = time.monotonic()
    runner.start(users, spawn_rate=users)
    gevent.spawn_later(duration, runner.quit)
    assert runner.greenlet is not None
    runner.greenlet.join()
    return recorder, started, time.monotonic()


def run_load_bench(
    home: Path,
    *,
    host: str,
    duration: float,
    counts: dict[str, int],
    waits: dict[str, tuple[float, float]],
    samples: int,
) -> LoadResult:
    """One load test run: the service started and stopped around it."""
    check_host(host)
    _require_locust()
    from ledger.bench.locustfile import IMPORT_DONE, IMPORT_GROUPS, Plan

    with tempfile.TemporaryDirectory(prefix="ledger-bench-load-", dir=home if home.is_dir() else None) as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # the embedded server runs as its own system user
        # The sample for the first import (seed 1), then one per upload in turn (seeds 2, ...):
        # the same generator, other grant codes, so each of them commits rows of its own.
        paths = [write_manifest(workdir / f"manifest-{ROWS}-seed{s}.csv", ROWS, seed=s) for s in range(1, samples + 2)]
        service_home = workdir / "home"
        service_home.mkdir()
        service_home.chmod(0o755)
        machine_before = os.getloadavg()
        with _running(service_home, host) as service:
            tokens, asset_ids, first = _prepare(service, counts, paths[0])
            plan = Plan(
                lab=LAB,
                policy=POLICY,
                samples=paths[1:],
                tokens=tokens,
                asset_ids=asset_ids,
                receipts=[first],
                run_id=uuid.uuid4().hex[:8],
                chunk_bytes=CHUNK_BYTES,
                poll_seconds=POLL_SECONDS,
            )
            logged_before = len(service.requests)
            recorder, started, stopped = _run_locust(service.base_url, plan, counts, waits, duration)
            load_end = os.getloadavg()
            server_times = service.requests[logged_before:]
            verified, verify_failure = _verify(service)
        shutil.rmtree(service_home, ignore_errors=True)
    return _result(
        plan,
        recorder,
        server_times,
        import_groups=IMPORT_GROUPS,
        import_done=IMPORT_DONE,
        counts=counts,
        waits=waits,
        duration=stopped - started,
        verified=verified,
        verify_failure=verify_failure,
        machine={
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
            "load_average_1m_start": round(machine_before[0], 2),
            "load_average_1m_end": round(load_end[0], 2),
        },
    )


def _result(
    plan: Plan,
    recorder: _Recorder,
    server_times: list[tuple[str, float]],
    *,
    import_groups: frozenset[str],
    import_done: str,
    counts: dict[str, int],
    waits: dict[str, tuple[float, float]],
    duration: float,
    verified: bool,
    verify_failure: Any,
    machine: dict[str, Any],
) -> LoadResult:
    server: dict[str, list[float]] = {}
    for name, ms in server_times:
        server.setdefault(name, []).append(ms)
    endpoints = {
        name: _figures(times, recorder.failures.get(name, 0), _server_times(name, server))
        for name, times in sorted(recorder.times.items())
    }
    others = [n for n in recorder.times if n not in import_groups]
    non_import = _figures(
        [t for n in others for t in recorder.times[n]],
        sum(recorder.failures.get(n, 0) for n in others),
        [t for n in others for t in _server_times(n, server) or []],
    )
    done = [r for r in plan.imports if r.status == "done"]
    rows = sum(r.rows_total for r in done)
    first_upload = min(plan.upload_starts, default=0.0)
    rows_seconds = max((r.ended for r in done), default=first_upload) - first_upload
    rows_per_minute = round(rows / rows_seconds * 60) if rows_seconds > 0 else 0.0
    requests = sum(len(t) for t in recorder.times.values())
    failures = sum(recorder.failures.values()) + recorder.user_errors
    ratio = round(failures / requests, 5) if requests else 1.0
    import_seconds = [r.ended - r.started for r in done]
    thresholds = {
        "rows_per_minute_min": Threshold(
            limit=ROWS_PER_MINUTE_MIN, measured=rows_per_minute, holds=rows_per_minute >= ROWS_PER_MINUTE_MIN
        ),
        "non_import_p95_ms_max": Threshold(
            limit=P95_MS_MAX,
            measured=non_import.p95_ms,
            holds=non_import.p95_ms is not None and non_import.p95_ms <= P95_MS_MAX,
        ),
        "failure_ratio_max": Threshold(limit=FAILURE_RATIO_MAX, measured=ratio, holds=ratio <= FAILURE_RATIO_MAX),
    }
    return LoadResult(
        machine=machine,
        duration_seconds=round(duration, 1),
        users=dict(counts),
        waits_seconds={role: list(w) for role, w in waits.items()},
        uploads=len(plan.upload_starts),
        imports_done=len(done),
        imports_not_done=sum(1 for r in plan.imports if r.status != "done"),
        imports_unfinished=len(plan.upload_starts) - len(plan.imports),
        rows=rows,
        rows_committed=sum(r.rows_committed for r in done),
        rows_duplicate=sum(r.rows_duplicate for r in done),
        rows_quarantined=sum(r.rows_quarantined for r in done),
        rows_seconds=round(rows_seconds, 1),
        rows_per_minute=rows_per_minute,
        import_seconds_p50=round(statistics.median(import_seconds), 2) if import_seconds else None,
        import_seconds_max=round(max(import_seconds), 2) if import_seconds else None,
        requests=requests,
        failures=failures,
        failure_ratio=ratio,
        non_import=non_import,
        # The imports themselves last, after the requests.
        endpoints=dict(sorted(endpoints.items(), key=lambda item: item[0] == import_done)),
        verified=verified,
        verify_failure=verify_failure,
        thresholds=thresholds,
        passed=all(t.holds for t in thresholds.values()),
    )


def _server_times(name: str, server: dict[str, list[float]]) -> list[float] | None:
    """The access log's times of the requests Locust names ``name`` ("METHOD /route/{param}"):
    the log names routes by their templates, with the parameters' types."""
    method, _, path = name.partition(" ")
    for logged, times in server.items():
        logged_method, _, route = logged.partition(" ")
        if logged_method == method and _untyped(route).rstrip("/") == path.rstrip("/"):
            return times
    return None


def _untyped(route: str) -> str:
    """``/quarantine/{item_id:str}`` as ``/quarantine/{item_id}``."""
    parts = []
    for part in route.split("/"):
        if part.startswith("{") and ":" in part:
            part = part.split(":", 1)[0] + "}"
        parts.append(part)
    return "/".join(parts)


def render_table(result: LoadResult) -> str:
    """The figures as a plain-text table: per endpoint, then the thresholds."""
    lines = [
        f"{'endpoint':<44} {'requests':>8} {'failed':>6} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'server p95':>10}"
    ]

    def row(name: str, f: Figures) -> str:
        def cell(v: float | None, width: int) -> str:
            return f"{'-' if v is None else f'{v:.1f}':>{width}}"

        return (
            f"{name:<44} {f.requests:>8} {f.failures:>6} {cell(f.p50_ms, 8)} {cell(f.p95_ms, 8)} "
            f"{cell(f.max_ms, 8)} {cell(f.server_p95_ms, 10)}"
        )

    lines += [row(name, f) for name, f in result.endpoints.items()]
    lines.append(row("all but the imports' requests", result.non_import))
    lines.append("")
    lines.append(
        f"imports: {result.imports_done} done, {result.imports_not_done} not done, {result.imports_unfinished} "
        f"unfinished at the end; {result.rows:,} rows in {result.rows_seconds} s "
        f"= {result.rows_per_minute:,.0f} rows/min"
    )
    for name, t in result.thresholds.items():
        lines.append(f"{name}: limit {t.limit:g}, measured {t.measured}: {'holds' if t.holds else 'DOES NOT HOLD'}")
    lines.append(f"chain verified after the run: {result.verified}")
    return "\n".join(lines)
