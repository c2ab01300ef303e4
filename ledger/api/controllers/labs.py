"""/labs: the lab registry. Admins register labs; every role may list those it acts for."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from ledger.api.guards import admins, readers
from ledger.api.inputs import json_body
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.services import labs as service
from ledger.services.access import Principal, visible_labs

__all__ = ["LabsController"]


class LabsController(Controller):
    path = "/labs"
    tags = ["labs"]

    @get("/", summary="The registered labs (a lab manager's own only), by name", guards=[readers])
    async def list_labs(
        self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> list[service.LabRow]:
        return await service.list_visible(ledger.db, visible_labs(principal))

    @post(
        "/",
        summary="Register a lab, so that tokens and imports may name it",
        status_code=201,
        guards=[admins],
        before_request=json_body,
        opt=openapi_opt((409,)),
    )
    async def add(self, data: JSONBody[service.AddBody], ledger: NamedDependency[AppState]) -> service.LabRow:
        return await service.add(ledger.db, data.name, data.title)
