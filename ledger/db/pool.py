"""asyncpg connections with our codecs (jsonb through msgspec)."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ledger.db.urls import asyncpg_dsn

__all__ = ["connect", "create_pool"]

_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode


async def _init(conn: asyncpg.Connection[Any]) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: _json_encode(v).decode(),
        decoder=_json_decode,
        schema="pg_catalog",
        format="text",
    )


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool[Any]:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(url), min_size=min_size, max_size=max_size, init=_init
    )
    assert pool is not None
    return pool


async def connect(url: str) -> asyncpg.Connection[Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    await _init(conn)
    return conn
