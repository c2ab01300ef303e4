"""/tokens (admin): list, create (the secret is shown once), revoke and rotate API tokens."""

from __future__ import annotations

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from ledger.api.guards import admins
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.services import tokens as service

__all__ = ["TokensController"]


class TokensController(Controller):
    path = "/tokens"
    tags = ["tokens"]
    guards = [admins]

    @get("/", summary="Every token: role, labs, label, created, expires, last used, revoked; never the secret")
    async def list_tokens(self, ledger: NamedDependency[AppState]) -> list[service.TokenInfo]:
        return await service.list_all(ledger.db)

    @post(
        "/",
        summary="Create a token (expires_in_days: omitted for the server's default, null for never); "
        "the secret is in this answer only",
        status_code=201,
        opt=openapi_opt((422,)),
    )
    async def create(
        self, data: JSONBody[service.CreateBody], ledger: NamedDependency[AppState]
    ) -> service.CreatedToken:
        return await service.create(
            ledger.db,
            role=data.role,
            labs=data.labs,
            label=data.label,
            expires_in_days=data.expiry(ledger.settings.token_ttl_days),
        )

    @delete("/{token_id:str}", summary="Revoke a token (at once, for every API process)", status_code=200)
    async def revoke(self, token_id: FromPath[str], ledger: NamedDependency[AppState]) -> service.TokenInfo:
        return await service.revoke(ledger.db, token_id)

    @post(
        "/{token_id:str}/rotate",
        summary="A new secret for the same role, labs, label and lifetime; the old one is revoked",
        status_code=201,
        opt=openapi_opt((409,)),
    )
    async def rotate(self, token_id: FromPath[str], ledger: NamedDependency[AppState]) -> service.CreatedToken:
        async with ledger.db.acquire() as conn:
            return await service.rotate(conn, token_id)
