"""Shared fixtures: a real PostgreSQL, a migrated template database, one fresh clone per test.

The server is the embedded one (a pip wheel) unless LEDGER_TEST_DATABASE_URL names another,
e.g. postgresql://postgres@127.0.0.1:5432/postgres. Cloning a migrated template takes a few
tens of milliseconds, so every test gets its own empty ledger.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.config import Settings
from ledger.db.pool import connect
from ledger.testing import Api, running_api
from ledger.testing.databases import run_admin as _admin
from ledger.testing.databases import with_database as _with_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _process_wide_logging() -> Iterator[None]:
    """A test that runs a `ledger` command in-process (ledger.cli.main.main) configures the
    process's logging and audit log on the streams pytest captured for that test, which are
    closed after it: later tests would log into a closed file. Put them back as they were."""
    import structlog

    from ledger import audit_log

    saved, sink = structlog.get_config(), audit_log._config
    try:
        yield
    finally:
        structlog.configure(**saved)
        audit_log._config = sink


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a maintenance database on the server the tests use."""
    url = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    import fcntl

    from ledger.db.embedded import start_embedded

    pgdata = ROOT / ".ledger" / "test-pgdata"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    # Under pytest-xdist every worker asks for the server at once: one starts it, the others
    # join it (the wheel counts its users), one at a time. Two starting together read each
    # other's half-written postmaster.pid.
    with open(pgdata.parent / "test-pgdata.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            server_url, handle = start_embedded(pgdata, stop_on_exit=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    yield server_url
    del handle


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    from ledger.db.migrate import upgrade

    name = f"ledger_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_server, f'CREATE DATABASE "{name}"'))
    upgrade(_with_database(pg_server, name))
    # The labs the tests' tokens and imports name (ledger.testing.TOKENS), registered as an
    # admin would; tests of the registry itself use other names.
    asyncio.run(_admin(_with_database(pg_server, name), "INSERT INTO labs (name) VALUES ('chem-lab'), ('bio-lab')"))
    yield name
    asyncio.run(_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(pg_server: str, template_db: str) -> AsyncIterator[str]:
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    await _admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _with_database(pg_server, name)
    await _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Any]:
    conn = await connect(database_url)
    yield conn
    await conn.close()


# The app fixtures: an app per test on its own database, with an in-process worker (unless a
# test parametrises inline_worker to False) and a token per role (ledger.testing.TOKENS).


@pytest.fixture
def batch_rows() -> int:
    return 10_000


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def inline_worker() -> bool:
    return True


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, batch_rows: int, settings_overrides: dict[str, Any], inline_worker: bool
) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=database_url,
        home=tmp_path,
        policies_dir=ROOT / "policies",
        batch_rows_max=batch_rows,
        **settings_overrides,
    )
    async with running_api(settings, database_url, inline_worker=inline_worker) as client:
        yield client
