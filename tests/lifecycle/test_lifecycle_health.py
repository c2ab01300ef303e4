"""Health that tells the truth: /health/ready is not ready when no worker has heartbeated
within the heartbeat timeout, and ready again once one is back; /health/workers (admin) and
`ledger status` show the workers.

`serve --workers 0` runs the API only; the test runs a `ledger worker` of its own and kills it
with SIGKILL, so that the last worker's death is the test's doing and nothing restarts it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.lifecycle.conftest import ServerFactory
from tests.lifecycle.helpers import HEARTBEAT_SECONDS, Server, Worker, create_token, run_cli

pytestmark = pytest.mark.lifecycle

READY_AFTER_START_SECONDS = 20


@pytest.fixture
def workers(servers: ServerFactory) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.cleanup()


def _ready(server: Server) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{server.url}/health/ready", timeout=10)
    return response.status_code, response.json()


def _wait_ready(server: Server, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = _ready(server)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/health/ready still {code} {body} after {timeout}s, wanted {status}")
        time.sleep(0.1)


def _status(server: Server) -> tuple[int, dict[str, Any] | str]:
    done = run_cli(server.env, "status", "--json", timeout=60)
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, done.stdout + done.stderr


def _listed(report: Any, pid: int) -> dict[str, Any]:
    assert isinstance(report, dict), report
    matching: list[dict[str, Any]] = [w for w in report["workers"] if w["pid"] == pid]
    assert len(matching) == 1, (pid, report)
    return matching[0]


def test_ready_follows_the_last_worker_and_health_workers_lists_it(
    servers: ServerFactory, workers: list[Worker]
) -> None:
    server = servers(workers=0)
    admin_token = server.admin_token
    assert admin_token, server.output()
    manager_token = create_token(server.env, "lab_manager", "chem-lab")

    # API only, no worker yet: not ready.
    assert server.worker_processes() == []
    code, body = _ready(server)
    assert (code, body.get("code")) == (503, "no_worker"), body

    first = Worker(server, "worker-1")
    workers.append(first)
    body = _wait_ready(server, 200, READY_AFTER_START_SECONDS)
    assert body["status"] == "ok", body

    # /health/workers: admin only; the worker is listed with its pid, and the queue's depth.
    assert httpx.get(f"{server.url}/health/workers", timeout=10).status_code == 401
    with server.client(manager_token) as manager:
        assert manager.get("/health/workers").status_code == 403
    with server.client(admin_token) as admin:
        response = admin.get("/health/workers")
    assert response.status_code == 200, response.text
    report = response.json()
    listed = _listed(report, first.pid)
    for key in ("id", "hostname", "started_at", "last_heartbeat"):
        assert listed[key], listed
    assert listed["running"] == [], listed
    assert {k: type(v) for k, v in report["queue"].items()} == {"queued": int, "running": int, "retrying": int}
    code, status = _status(server)
    assert code == 0, status
    _listed(status, first.pid)

    # The last worker dies: not ready within 2 x the heartbeat timeout.
    first.kill()
    killed_at = time.monotonic()
    body = _wait_ready(server, 503, 2 * HEARTBEAT_SECONDS + 2)
    took = time.monotonic() - killed_at
    print(f"not ready {took:.1f} s after the last worker died")
    assert body["code"] == "no_worker", body
    assert took <= 2 * HEARTBEAT_SECONDS, f"not-ready only {took:.1f} s after the last worker died"
    code, status = _status(server)
    assert code == 1, status

    # A worker is back: ready again.
    second = Worker(server, "worker-2")
    workers.append(second)
    _wait_ready(server, 200, READY_AFTER_START_SECONDS)
    code, status = _status(server)
    assert code == 0, status
    _listed(status, second.pid)
