"""The lab registry: the labs that tokens and imports may name (migration 0012)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import msgspec

from ledger.db.pool import Executor

__all__ = ["LabRow", "add_lab", "list_labs", "unknown_labs"]


class LabRow(msgspec.Struct, frozen=True):
    name: str
    title: str | None
    created_at: dt.datetime


async def add_lab(conn: Executor, name: str, title: str | None) -> LabRow | None:
    """Register ``name``; None when it is registered already (nothing is changed then)."""
    row = await conn.fetchrow(
        "INSERT INTO labs (name, title) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING name, title, created_at",
        name,
        title,
    )
    return None if row is None else LabRow(row["name"], row["title"], row["created_at"])


async def list_labs(conn: Executor, names: Sequence[str] | None = None) -> list[LabRow]:
    """Every registered lab (or those of ``names``), by name."""
    rows = await conn.fetch(
        "SELECT name, title, created_at FROM labs WHERE $1::text[] IS NULL OR name = ANY($1::text[]) ORDER BY name",
        None if names is None else list(names),
    )
    return [LabRow(r["name"], r["title"], r["created_at"]) for r in rows]


async def unknown_labs(conn: Executor, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that are not registered, in the order given."""
    if not names:
        return []
    known = set(
        await conn.fetchval(
            "SELECT coalesce(array_agg(name), '{}') FROM labs WHERE name = ANY($1::text[])", list(names)
        )
    )
    return [n for n in names if n not in known]
