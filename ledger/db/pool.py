"""asyncpg connections with our codecs (jsonb through msgspec)."""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from ledger.db.urls import asyncpg_dsn

__all__ = ["Conn", "Executor", "connect", "create_pool"]

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


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=min_size, max_size=max_size, init=_init)
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection[Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await _init(conn)
    return conn
