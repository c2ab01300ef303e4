"""The current state of assets (a projection of the ledger) and each asset's history, as a
principal may see them."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ledger.db import assets as assets_db
from ledger.db.assets import AssetFilter, AssetRow, HistoryRow
from ledger.db.cursors import decode_cursor, encode_cursor
from ledger.errors import InvalidRequest, NotFound
from ledger.services.access import Principal, visible_labs
from ledger.services.limits import ASSETS_PAGE_MAX

__all__ = ["PAGE_LIMIT_MAX", "AssetHistory", "AssetsPage", "asset_history", "list_assets"]

PAGE_LIMIT_MAX = ASSETS_PAGE_MAX


class AssetsPage(msgspec.Struct, frozen=True):
    items: list[AssetRow]
    next: str | None


class AssetHistory(msgspec.Struct, frozen=True):
    asset_id: str
    revisions: list[HistoryRow]


async def list_assets(
    pool: asyncpg.Pool[Any],
    principal: Principal,
    *,
    grant_code: str | None,
    category: str | None,
    location: str | None,
    lab: str | None,
    limit: int,
    cursor: str | None,
) -> AssetsPage:
    """The latest revision per (asset_id, grant_code), in key order, ``limit`` at a time."""
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {PAGE_LIMIT_MAX}")
    labs = visible_labs(principal)
    if lab is not None:
        labs = (lab,) if labs is None or lab in labs else ()
    flt = AssetFilter(
        grant_code=grant_code.upper() if grant_code else None,
        category=category.lower() if category else None,
        location=location.upper() if location else None,
        labs=labs,
    )
    after = decode_cursor(cursor, tuple[str, str]) if cursor else None
    items = await assets_db.list_assets(pool, flt, after=after, limit=limit)
    last = items[-1] if len(items) == limit else None
    # Padded, as /assets has always issued its cursors.
    return AssetsPage(
        items=items, next=None if last is None else encode_cursor([last.asset_id, last.grant_code], padded=True)
    )


async def asset_history(
    pool: asyncpg.Pool[Any], principal: Principal, asset_id: str, grant_code: str | None
) -> AssetHistory:
    """Every revision of the asset in the labs the principal sees; 404 when there is none."""
    rows = await assets_db.asset_history(pool, asset_id.upper(), grant_code.upper() if grant_code else None)
    labs = visible_labs(principal)
    if labs is not None:
        rows = [r for r in rows if r.lab in labs]
    if not rows:
        raise NotFound("not_found", f"no asset {asset_id!r} visible to you")
    return AssetHistory(asset_id=asset_id.upper(), revisions=rows)
