"""/assets: the latest revision of every asset, and each asset's history."""

from __future__ import annotations

import base64

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ledger.api.state import AppState
from ledger.db.assets import AssetFilter, AssetRow, HistoryRow, asset_history, list_assets
from ledger.errors import InvalidRequest, NotFound
from ledger.services.access import READERS, Principal, require_role, visible_labs

__all__ = ["AssetsController"]


class AssetsPage(msgspec.Struct, frozen=True):
    items: list[AssetRow]
    next: str | None


class AssetHistory(msgspec.Struct, frozen=True):
    asset_id: str
    revisions: list[HistoryRow]


def _encode_cursor(row: AssetRow) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([row.asset_id, row.grant_code])).decode()


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        asset_id, grant_code = msgspec.json.decode(base64.urlsafe_b64decode(cursor.encode()), type=tuple[str, str])
    except (ValueError, msgspec.DecodeError):
        raise InvalidRequest("invalid_cursor", "cursor is not one this service issued") from None
    return asset_id, grant_code


class AssetsController(Controller):
    path = "/assets"
    tags = ["assets"]

    @get("/", summary="Latest revision per (asset_id, grant_code)")
    async def list(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        grant_code: FromQuery[str | None] = None,
        category: FromQuery[str | None] = None,
        location: FromQuery[str | None] = None,
        lab: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> AssetsPage:
        require_role(principal, READERS)
        if not 1 <= limit <= 1000:
            raise InvalidRequest("invalid_limit", "limit must be between 1 and 1000")
        labs = visible_labs(principal)
        if lab is not None:
            labs = (lab,) if labs is None or lab in labs else ()
        flt = AssetFilter(
            grant_code=grant_code.upper() if grant_code else None,
            category=category.lower() if category else None,
            location=location.upper() if location else None,
            labs=labs,
        )
        after = _decode_cursor(cursor) if cursor else None
        items = await list_assets(ledger.db, flt, after=after, limit=limit)
        return AssetsPage(items=items, next=_encode_cursor(items[-1]) if len(items) == limit else None)

    @get("/{asset_id:str}/history", summary="Every revision of an asset, with batch and leaf hash")
    async def history(
        self,
        asset_id: FromPath[str],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        grant_code: FromQuery[str | None] = None,
    ) -> AssetHistory:
        require_role(principal, READERS)
        rows = await asset_history(ledger.db, asset_id.upper(), grant_code.upper() if grant_code else None)
        labs = visible_labs(principal)
        if labs is not None:
            rows = [r for r in rows if r.lab in labs]
        if not rows:
            raise NotFound("not_found", f"no asset {asset_id!r} visible to you")
        return AssetHistory(asset_id=asset_id.upper(), revisions=rows)
