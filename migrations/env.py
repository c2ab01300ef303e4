"""Alembic environment: online migrations over asyncpg, URL from the caller or the environment."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from ledger.db.tables import metadata
from ledger.db.urls import sqlalchemy_url

config = context.config
target_metadata = metadata

# The advisory lock migrations hold (an arbitrary constant of ours: "ledger" in ASCII).
MIGRATION_LOCK = 0x6C6564676572

# Tables owned by the job-queue library, installed by a migration but not declared by us.
EXTERNAL_TABLES = {"pgqueuer", "pgqueuer_log", "pgqueuer_statistics", "pgqueuer_schedules"}


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return not (type_ == "table" and name in EXTERNAL_TABLES)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("LEDGER_DATABASE_URL")
    if not url:
        raise RuntimeError("no database URL: pass one to `ledger migrate` or set LEDGER_DATABASE_URL")
    return sqlalchemy_url(url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        compare_type=True,
    )
    with context.begin_transaction():
        # Two processes migrating one database at once (two `ledger serve` started together,
        # a deploy's migrate beside a restarted API) used to race, and one failed on a
        # duplicate type or table. They now take turns: the second, once the first commits,
        # reads the new revision and has nothing left to do. The lock is the transaction's.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        context.run_migrations()


async def _online() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
asyncio.run(_online())
