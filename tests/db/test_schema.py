"""The schema built by the migrations is the one the code declares, and the ledger is append-only."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.db.tables import APPEND_ONLY_TABLES, metadata
from ledger.db.urls import sqlalchemy_url

EXTERNAL_TABLES = {"pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "pgqueuer_schedules", "alembic_version"}


async def test_migrations_match_declared_metadata(database_url: str) -> None:
    def diff(connection: Connection) -> list[Any]:
        ctx = MigrationContext.configure(
            connection,
            opts={
                "compare_type": True,
                "include_object": lambda obj, name, type_, reflected, compare_to: (
                    not (type_ == "table" and name in EXTERNAL_TABLES)
                ),
            },
        )
        return list(compare_metadata(ctx, metadata))

    engine = create_async_engine(sqlalchemy_url(database_url))
    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert differences == []


async def _seed_batch(db: Any) -> None:
    await db.execute(
        """
        INSERT INTO ledger_batches (seq, kind, batch_hash, records, committed_at, chain_hash)
        VALUES (1, 'assets', '\\x00', 1, now(), '\\x00')
        """
    )
    await db.execute(
        """
        INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash)
        VALUES (1, 0, 'asset', '\\x7b7d', '\\x00')
        """
    )


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_entries SET record = '\\x00'",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries CASCADE",
        "UPDATE ledger_batches SET records = 2",
        "DELETE FROM ledger_batches",
        "TRUNCATE ledger_batches CASCADE",
    ],
)
async def test_ledger_rejects_update_delete_truncate(db: Any, statement: str) -> None:
    await _seed_batch(db)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert await db.fetchval("SELECT count(*) FROM ledger_entries") == 1


async def test_every_ledger_table_has_its_guards(db: Any) -> None:
    rows = await db.fetch(
        """
        SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal
        """
    )
    triggers = {(r["relname"], r["tgname"]) for r in rows}
    for table in APPEND_ONLY_TABLES:
        assert (table, f"{table}_no_update_delete") in triggers
        assert (table, f"{table}_no_truncate") in triggers


def test_migrations_started_at_once_take_turns(pg_server: str) -> None:
    """Two processes starting on an empty database (two `ledger serve`, or a deploy's migrate
    beside an API) both migrate it: the second waits for the first's advisory lock, then finds
    nothing to do, where it used to fail on a duplicate type."""
    import asyncio
    import subprocess
    import sys
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    from ledger.db.migrate import head_revision
    from ledger.testing.checkout import ROOT
    from ledger.testing.databases import run_admin, with_database

    name = f"ledger_race_{uuid.uuid4().hex[:10]}"
    asyncio.run(run_admin(pg_server, f'CREATE DATABASE "{name}"'))
    url = with_database(pg_server, name)
    try:
        # Processes, as in production (Alembic's context is global to a process).
        command = [sys.executable, "-c", f"from ledger.db.migrate import upgrade; upgrade({url!r})"]
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(subprocess.run, command, capture_output=True, text=True, cwd=ROOT) for _ in range(2)]
            for run in runs:
                done = run.result()
                assert done.returncode == 0, done.stderr[-2000:]

        async def revision() -> str:
            conn = await asyncpg.connect(url)
            try:
                return str(await conn.fetchval("SELECT version_num FROM alembic_version"))
            finally:
                await conn.close()

        assert asyncio.run(revision()) == head_revision()
    finally:
        asyncio.run(run_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
