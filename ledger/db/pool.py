"""asyncpg connections with our codecs (jsonb through msgspec)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from ledger.db.urls import asyncpg_dsn

__all__ = ["Conn", "Executor", "connect", "create_pool", "name_connection"]

# A connection of our own or one borrowed from a pool; Executor also admits the pool itself.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
Executor: TypeAlias = "Conn | asyncpg.Pool[Any]"

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


_JSONB_VERSION = b"\x01"  # jsonb's binary wire format: a version byte, then JSON text


async def _init(conn: asyncpg.Connection[Any]) -> None:
    # Binary, so that COPY (always binary in asyncpg) can carry jsonb columns too.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: _JSONB_VERSION + _json_encode(v),
        decoder=lambda b: _json_decode(b[1:]),
        schema="pg_catalog",
        format="binary",
    )


def _server_settings(application_name: str | None) -> dict[str, str] | None:
    if application_name is None:
        return None
    return {
        "application_name": application_name,
        # A killed worker's backend would otherwise run its statement to the end (10 s seen,
        # holding the head lock) before noticing nobody reads the result: PostgreSQL checks
        # the client socket this often during a long statement and ends it when it is gone.
        "client_connection_check_interval": "2s",
    }


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str | None = None
) -> asyncpg.Pool[Any]:
    """A pool; ``application_name`` (set for workers) names its connections in pg_stat_activity
    and has the server watch for their client going away."""
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        init=_init,
        server_settings=_server_settings(application_name),
    )
    assert pool is not None
    return pool


async def name_connection(conn: Conn, name: str) -> None:
    """Rename the connection in pg_stat_activity until it is reset (a pool's release resets it)."""
    await conn.execute("SELECT set_config('application_name', $1, false)", name)


async def connect(url: str, *, application_name: str | None = None) -> asyncpg.Connection[Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url), server_settings=_server_settings(application_name))
    await _init(conn)
    return conn
