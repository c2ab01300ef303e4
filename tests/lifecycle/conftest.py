"""Fixtures of the job-lifecycle fault tests: real `ledger serve` trees on fresh homes, one
calibrated manifest, and the ledger content of its uninterrupted import to compare against.

Select the process-level tests with `-m lifecycle` (or leave them out with `-m "not lifecycle"`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.bench.manifest import write_manifest
from tests.lifecycle.helpers import HEARTBEAT_SECONDS, Server, content, create_token, submit, wait_done

# Calibrated on 2 cores: staging (parsing/validating) of this manifest lasts about 1.5-2.5 s
# and its final transaction 1.5-3 s, long enough to be caught in either with 20 ms polling.
ROWS = 80_000
# The settings of every import test: small checkpointed chunks, and staging processes even for
# this small file, so that their fate under faults is tested too.
IMPORT_ENV = {
    "LEDGER_IMPORT_CHUNK_ROWS": "1000",
    "LEDGER_IMPORT_PARALLEL_BYTES_MIN": "1",
    "LEDGER_IMPORT_PROCESSES": "2",
}
# How long an undisturbed import of the manifest may take here (it takes about 5 s).
IMPORT_SECONDS_MAX = 60


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lifecycle: starts real `ledger serve` processes and injects faults (slow: seconds each)"
    )


ServerFactory = Callable[..., Server]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start `ledger serve` trees; every process of every tree is killed at the end."""
    started: list[Server] = []

    def start(
        *, workers: int = 1, env: dict[str, str] | None = None, home: Path | None = None, name: str = "serve"
    ) -> Server:
        server = Server(home or tmp_path / "home", workers=workers, env=env, name=name)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(tmp_path_factory.mktemp("lifecycle") / "manifest.csv", ROWS)


_reference: dict[str, Any] = {}


@pytest.fixture
def reference(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The ledger content of the manifest imported without interruption on a fresh server with
    the same settings (computed once per session)."""
    if not _reference:
        server = Server(tmp_path_factory.mktemp("reference") / "home", env=IMPORT_ENV, name="reference")
        try:
            server.start()
            manager = server.client(create_token(server.env, "lab_manager", "chem-lab"))
            auditor = server.client(create_token(server.env, "auditor"))
            started = time.monotonic()
            task_id = submit(manager, manifest)
            body = wait_done(manager, task_id, IMPORT_SECONDS_MAX)
            assert body["status"] == "done", body
            print(f"reference import of {ROWS} rows: {time.monotonic() - started:.1f} s")
            _reference.update(content(manager, auditor, task_id))
        finally:
            server.cleanup()
    assert _reference["rows"]["rows_total"] == ROWS
    assert _reference["rows"]["rows_committed"] > 0
    assert sum(records for _, _, records in _reference["asset_batches"]) == _reference["rows"]["rows_committed"]
    assert _reference["receipt_kinds"][-1] == "receipt"
    return dict(_reference)


@pytest.fixture
def heartbeat() -> int:
    return HEARTBEAT_SECONDS
