"""Statements and database URLs on the PostgreSQL server the tests use.

The fixtures in tests/conftest.py build the per-test databases with these; tests that need a
database of their own beside the fixture's (tests/jobs/test_crash.py) use them too.
"""

from __future__ import annotations

from ledger.db.pool import connect
from ledger.db.urls import asyncpg_dsn

__all__ = ["run_admin", "with_database"]


def with_database(url: str, name: str) -> str:
    """``url`` (in any form the service accepts) naming database ``name`` instead, as an
    asyncpg DSN: same server, credentials and query parameters."""
    base, _, query = asyncpg_dsn(url).partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")


async def run_admin(url: str, *statements: str) -> None:
    """Run ``statements`` one after another, outside any transaction, on one connection to
    ``url``: for CREATE DATABASE and DROP DATABASE, which cannot run inside one."""
    conn = await connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
