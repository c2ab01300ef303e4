"""The embedded server starts with the service's settings (ledger/db/embedded.py)."""

from __future__ import annotations

import os

import pytest

from ledger.db.embedded import embedded_settings
from ledger.db.pool import connect


def test_settings_are_sized_between_the_defaults_and_a_gigabyte() -> None:
    settings = embedded_settings()
    shared = int(settings["shared_buffers"].removesuffix("MB"))
    assert 128 <= shared <= 1024
    assert settings["wal_buffers"] == "64MB"


@pytest.mark.skipif("LEDGER_TEST_DATABASE_URL" in os.environ, reason="a server the tests did not start")
async def test_the_embedded_server_runs_with_them(pg_server: str) -> None:
    conn = await connect(pg_server)
    try:
        for name, value in embedded_settings().items():
            # Compared as sizes: the server prints 1024MB as 1GB.
            same = await conn.fetchval("SELECT pg_size_bytes(current_setting($1)) = pg_size_bytes($2)", name, value)
            assert same, (name, value, await conn.fetchval("SELECT current_setting($1)", name))
    finally:
        await conn.close()
