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

from ledger.db.pool import connect
from ledger.db.urls import asyncpg_dsn

ROOT = Path(__file__).resolve().parents[1]


def _with_database(url: str, name: str) -> str:
    base, _, query = asyncpg_dsn(url).partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a maintenance database on the server the tests use."""
    url = os.environ.get("LEDGER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from ledger.db.embedded import start_embedded

    server_url, handle = start_embedded(ROOT / ".ledger" / "test-pgdata", stop_on_exit=True)
    yield server_url
    del handle


async def _admin(url: str, *statements: str) -> None:
    conn = await connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> Iterator[str]:
    from ledger.db.migrate import upgrade

    name = f"ledger_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_admin(pg_server, f'CREATE DATABASE "{name}"'))
    upgrade(_with_database(pg_server, name))
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
