"""`ledger serve` supervises its processes: a worker killed with SIGKILL (what the OOM killer
does) is restarted and its import resumes from its checkpoint; an embedded PostgreSQL that dies
is restarted, and the API answers 503 meanwhile instead of 500.

Each ends with the ledger content of an uninterrupted import of the same manifest, once."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lifecycle.conftest import IMPORT_ENV, IMPORT_SECONDS_MAX, ServerFactory
from tests.lifecycle.helpers import (
    HEARTBEAT_SECONDS,
    STAGING,
    Server,
    assert_ledger_whole,
    create_token,
    describe,
    get_import,
    submit,
    wait_all_dead,
    wait_dead,
    wait_import,
)

pytestmark = pytest.mark.lifecycle


def _mid_staging(body: dict[str, Any]) -> bool:
    return body["status"] in STAGING and 0 < body["bytes_read"] < body["manifest_bytes"]


def _kill_worker_and_resume(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any], *, when: str
) -> tuple[Server, float]:
    server = servers(env=IMPORT_ENV)
    manager = server.client(create_token(server.env, "lab_manager", "chem-lab"))
    auditor = server.client(create_token(server.env, "auditor"))
    [worker] = server.wait_workers(1)
    task_id = submit(manager, manifest)
    if when == "staging":
        wait_import(manager, task_id, _mid_staging, IMPORT_SECONDS_MAX)
    else:
        wait_import(manager, task_id, lambda b: b["status"] == "finalizing", IMPORT_SECONDS_MAX)
        time.sleep(0.3)  # well inside a final transaction of 1.5-3 s
    db = server.db()
    # Nothing of the import is on the ledger yet: the kill lands before its commit.
    assert db.fetchval("SELECT count(*) FROM ledger_batches") == 0
    assert db.fetchval("SELECT status FROM imports WHERE id = $1::uuid", task_id) in (*STAGING, "finalizing")
    staging = worker.children(recursive=True)
    worker.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    wait_dead(worker, 10)

    # serve starts another worker within a few seconds, and says so in its log.
    [replacement] = server.wait_workers(1, timeout=10, exclude={worker.pid})
    assert replacement.pid != worker.pid
    restarted = server.wait_event(
        lambda e: e.get("event") == "process_restarted" and e.get("process") == "worker", timeout=10
    )
    assert restarted
    exited = server.wait_event(lambda e: e.get("event") == "process_exited" and e.get("process") == "worker", 5)
    assert any(v in (-signal.SIGKILL, 128 + signal.SIGKILL) for v in exited.values()), exited
    # The dead worker's staging processes do not linger.
    left = wait_all_dead(staging, 10)
    assert not left, describe(left)

    budget = HEARTBEAT_SECONDS + 30 - (time.monotonic() - killed_at)
    body = wait_import(manager, task_id, lambda b: b["status"] == "done", budget)
    took = time.monotonic() - killed_at
    print(f"worker killed while {when}: import done {took:.1f} s after the kill")
    assert took <= HEARTBEAT_SECONDS + 30, took
    assert body["error"] is None, body
    assert_ledger_whole(server, auditor, task_id, reference)
    return server, took


def test_worker_killed_while_staging_is_restarted_and_import_ends_done(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any]
) -> None:
    _kill_worker_and_resume(servers, manifest, reference, when="staging")


def test_worker_killed_in_final_transaction_is_restarted_and_import_ends_done(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any]
) -> None:
    _kill_worker_and_resume(servers, manifest, reference, when="finalizing")


def test_embedded_postgres_killed_mid_import_api_answers_503_and_import_ends_done(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any]
) -> None:
    server = servers(env=IMPORT_ENV)
    manager = server.client(create_token(server.env, "lab_manager", "chem-lab"), timeout=10)
    auditor = server.client(create_token(server.env, "auditor"), timeout=10)
    task_id = submit(manager, manifest)
    wait_import(manager, task_id, _mid_staging, IMPORT_SECONDS_MAX)
    postmaster = server.postmaster()
    assert postmaster is not None
    old_pid = postmaster.pid
    server.remember()
    postmaster.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()

    # While it is down, a request that needs the database answers 503 with a code and
    # Retry-After (not 500 internal).
    unavailable: httpx.Response | None = None
    answers: list[int] = []
    deadline = time.monotonic() + 15
    while unavailable is None and time.monotonic() < deadline:
        time.sleep(0.01)
        try:
            response = get_import(manager, task_id)
        except httpx.TransportError:
            continue
        answers.append(response.status_code)
        if response.status_code == 503:
            unavailable = response
        elif response.status_code != 200:
            pytest.fail(f"while the database is down: {response.status_code} {response.text}")
    assert unavailable is not None, f"no 503 while the database was down; answers: {sorted(set(answers))}"
    assert unavailable.json()["code"] == "database_unavailable", unavailable.text
    assert int(unavailable.headers["Retry-After"]) >= 1

    # serve brings PostgreSQL back, logs it, and the import ends done.
    server.wait_event(lambda e: e.get("event") == "process_restarted" and e.get("process") == "postgres", 30)
    deadline = time.monotonic() + 30
    while (pm := server.postmaster()) is None or pm.pid == old_pid:
        assert time.monotonic() < deadline, "the embedded PostgreSQL was not started again"
        time.sleep(0.2)
    server.remember()
    body = wait_import(manager, task_id, lambda b: b["status"] == "done", 60)
    print(f"postmaster killed: {len(answers)} answers to a 503, done {time.monotonic() - killed_at:.1f} s after")
    assert body["error"] is None, body
    assert_ledger_whole(server, auditor, task_id, reference)
