"""/connectors: upstream sources, their syncs, and the syncs `ledger pull` runs (docs/connectors.md).

Lab managers register and pull sources of their labs and read theirs; officers and admins may
also start a sync now; every role reads (lab managers only their labs')."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody, QueryParameter

from ledger.api.guards import actors, readers, submitters
from ledger.api.inputs import PathText, json_body
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.services import connectors as service
from ledger.services.access import Principal

__all__ = ["ConnectorsController"]

SyncsLimit = Annotated[int, QueryParameter(ge=1, le=service.SYNCS_LIMIT_MAX)]


class Queued(msgspec.Struct, frozen=True):
    connector: str
    queued: bool  # False: a sync of this source is already queued or running


class ConnectorsController(Controller):
    path = "/connectors"
    tags = ["connectors"]

    @get("/", summary="Every source (a lab manager's own labs' only), each with its latest sync", guards=[readers])
    async def list_connectors(
        self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> list[service.Connector]:
        return await service.list_connectors(ledger.db, principal)

    @post(
        "/",
        summary="Register a source from its TOML definition (`ledger connector add`); a worker runs it on schedule",
        guards=[submitters],
        before_request=json_body,
        responses={200: ResponseSpec(service.Connector, description="Registered before: its definition replaced")},
        opt=openapi_opt((409,)),
    )
    async def register(
        self,
        data: JSONBody[service.RegisterBody],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> Response[service.Connector]:
        async with ledger.db.acquire() as conn:
            created, connector = await service.register(conn, principal, ledger.policies, data.definition)
        return Response(connector, status_code=201 if created else 200)

    @get("/{name:str}", summary="One source: its definition, schedule and cursor", guards=[readers])
    async def get_connector(
        self, name: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.Connector:
        return await service.connector(ledger.db, principal, name)

    @get(
        "/{name:str}/syncs",
        summary="The source's latest syncs, newest first: status, import, records, cursor window, errors, pages",
        guards=[readers],
    )
    async def list_syncs(
        self,
        name: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        limit: SyncsLimit = 20,
    ) -> list[service.Sync]:
        return await service.syncs(ledger.db, principal, name, limit)

    @post(
        "/{name:str}/syncs",
        summary="Start a sync of the source now, in a worker (officers and admins)",
        status_code=202,
        guards=[actors],
    )
    async def start_sync(
        self, name: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> Queued:
        async with ledger.db.acquire() as conn:
            queued = await service.trigger(conn, principal, name)
        return Queued(connector=name, queued=queued)

    @post(
        "/{name:str}/pulls",
        summary="Record a sync `ledger pull` ran; its manifest is then uploaded naming the sync (connector_sync)",
        status_code=201,
        guards=[submitters],
        before_request=json_body,
        opt=openapi_opt((409, 422)),
    )
    async def record_pull(
        self,
        name: PathText,
        data: JSONBody[service.ClientSync],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> service.Sync:
        async with ledger.db.acquire() as conn:
            return await service.record_client_sync(conn, principal, ledger.policies, name, data)
