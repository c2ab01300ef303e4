"""Transient database failures are retried from the checkpoint; a failure on every attempt ends
`failed` / `transient_failure` with every attempt listed, and nothing on the ledger.

The fault is real: `pg_terminate_backend` of the connection the import names itself by
(application_name `ledger-import:<task_id>`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle.conftest import IMPORT_ENV, IMPORT_SECONDS_MAX, ServerFactory
from tests.lifecycle.helpers import (
    STAGING,
    Database,
    Terminator,
    assert_ledger_whole,
    create_token,
    get_import,
    submit,
    wait_done,
    wait_import,
)

pytestmark = pytest.mark.lifecycle

RETRY_ENV = {
    **IMPORT_ENV,
    "LEDGER_JOB_RETRY_BASE_SECONDS": "1",
    "LEDGER_JOB_RETRY_MAX_SECONDS": "2",
}


def _terminate_once(db: Database, task_id: str, timeout: float = 5) -> int:
    """Terminate the import's connection(s); bounded wait for one to be there."""
    deadline = time.monotonic() + timeout
    while True:
        killed = db.terminate_import(task_id)
        if killed:
            return killed
        if time.monotonic() > deadline:
            names = db.fetch("SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = 'ledger'")
            raise AssertionError(
                f"no connection named ledger-import:{task_id}; names seen: {sorted(r[0] for r in names)}"
            )
        time.sleep(0.01)


def _check_attempt(attempt: dict[str, Any]) -> None:
    assert isinstance(attempt["attempt"], int), attempt
    assert attempt["error"]["code"] and attempt["error"]["message"], attempt
    assert attempt["failed_at"], attempt
    assert "retry_at" in attempt, attempt


@pytest.mark.parametrize("when", ["staging", "finalizing"])
def test_connection_terminated_import_retries_and_ends_done_with_identical_content(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any], when: str
) -> None:
    server = servers(env=RETRY_ENV)
    manager = server.client(create_token(server.env, "lab_manager", "chem-lab"))
    auditor = server.client(create_token(server.env, "auditor"))
    db = server.db()
    task_id = submit(manager, manifest)
    if when == "staging":
        wait_import(
            manager,
            task_id,
            lambda b: b["status"] in STAGING and 0 < b["bytes_read"] < b["manifest_bytes"],
            IMPORT_SECONDS_MAX,
        )
    else:
        wait_import(manager, task_id, lambda b: b["status"] == "finalizing", IMPORT_SECONDS_MAX)
        time.sleep(0.3)  # inside the final transaction
    assert db.fetchval("SELECT count(*) FROM ledger_batches") == 0
    _terminate_once(db, task_id)

    body = wait_import(manager, task_id, lambda b: b["status"] == "done", IMPORT_SECONDS_MAX)
    assert body["error"] is None, body
    assert len(body["attempts"]) >= 1, body["attempts"]
    for attempt in body["attempts"]:
        _check_attempt(attempt)
        assert attempt["retry_at"] is not None, attempt  # each listed failure was retried
    assert_ledger_whole(server, auditor, task_id, reference)


def test_failure_on_every_attempt_ends_failed_transient_failure_with_attempts_listed(
    servers: ServerFactory, manifest: Path
) -> None:
    server = servers(env={**RETRY_ENV, "LEDGER_JOB_RETRY_ATTEMPTS": "2"})
    manager = server.client(create_token(server.env, "lab_manager", "chem-lab"))
    auditor = server.client(create_token(server.env, "auditor"))
    db = server.db()
    task_id = submit(manager, manifest)
    terminator = Terminator(db, task_id)
    terminator.start()
    try:
        body = wait_done(manager, task_id, 60)
    finally:
        terminator.stop()
    assert body["status"] == "failed", body
    assert body["error"]["code"] == "transient_failure", body["error"]
    assert terminator.kills >= 2, (terminator.kills, terminator.errors[-3:])
    attempts = body["attempts"]
    assert [a["attempt"] for a in attempts] == [1, 2], attempts
    for attempt in attempts:
        _check_attempt(attempt)
    assert attempts[0]["retry_at"] is not None
    assert attempts[-1]["retry_at"] is None  # no third attempt
    # Nothing of it reached the ledger, and the (empty) chain verifies.
    assert body["batches"] == [], body["batches"]
    assert db.fetchval("SELECT count(*) FROM ledger_batches") == 0
    assert db.fetchval("SELECT count(*) FROM ledger_entries") == 0
    verify = auditor.get("/audit/verify")
    assert verify.status_code == 200 and verify.json()["ok"] is True, verify.text
    # It stays failed: no further attempt after the last.
    time.sleep(2)
    assert get_import(manager, task_id).json()["status"] == "failed"
