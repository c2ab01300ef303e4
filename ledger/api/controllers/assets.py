"""/assets: the latest revision of every asset, and each asset's history."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from ledger.api.guards import readers
from ledger.api.inputs import Count, PathText, QueryText, check_cursor
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.services import assets as service
from ledger.services.access import Principal

__all__ = ["AssetsController"]


class AssetsController(Controller):
    path = "/assets"
    tags = ["assets"]
    guards = [readers]

    @get("/", summary="Latest revision per (asset_id, grant_code)", opt=openapi_opt((422,)))
    async def list(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        grant_code: QueryText = None,
        category: QueryText = None,
        location: QueryText = None,
        lab: QueryText = None,
        limit: Count = 100,
        cursor: QueryText = None,
    ) -> service.AssetsPage:
        check_cursor("cursor", cursor)
        return await service.list_assets(
            ledger.db,
            principal,
            grant_code=grant_code,
            category=category,
            location=location,
            lab=lab,
            limit=limit,
            cursor=cursor,
        )

    @get("/{asset_id:str}/history", summary="Every revision of an asset, with batch and leaf hash")
    async def history(
        self,
        asset_id: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        grant_code: QueryText = None,
    ) -> service.AssetHistory:
        return await service.asset_history(ledger.db, principal, asset_id, grant_code)
