"""/assets: the latest revision of every asset, and each asset's history."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery

from ledger.api.guards import readers
from ledger.api.state import AppState
from ledger.services import assets as service
from ledger.services.access import Principal

__all__ = ["AssetsController"]


class AssetsController(Controller):
    path = "/assets"
    tags = ["assets"]
    guards = [readers]

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
    ) -> service.AssetsPage:
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
        asset_id: FromPath[str],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        grant_code: FromQuery[str | None] = None,
    ) -> service.AssetHistory:
        return await service.asset_history(ledger.db, principal, asset_id, grant_code)
