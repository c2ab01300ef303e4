"""/policies: the validation policies this service enforces."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency

from ledger.api.guards import readers
from ledger.api.inputs import PathText
from ledger.api.state import AppState
from ledger.core.policy.registry import UnknownPolicy
from ledger.errors import NotFound

__all__ = ["PoliciesController"]


class PolicySummary(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str
    title: str | None


class PolicyDetail(msgspec.Struct, frozen=True):
    name: str
    version: str
    sha256: str
    title: str | None
    descriptor: dict[str, Any]


class PoliciesController(Controller):
    path = "/policies"
    tags = ["policies"]
    guards = [readers]

    @get("/", summary="Every policy, with its version and SHA-256")
    async def list(self, ledger: NamedDependency[AppState]) -> list[PolicySummary]:
        return [PolicySummary(p.name, p.version, p.sha256, p.title) for p in ledger.policies.all()]

    @get("/{name:str}", summary="One policy's full descriptor")
    async def get(self, name: PathText, ledger: NamedDependency[AppState]) -> PolicyDetail:
        try:
            p = ledger.policies.get(name)
        except UnknownPolicy as exc:
            raise NotFound("not_found", str(exc)) from exc
        return PolicyDetail(p.name, p.version, p.sha256, p.title, p.descriptor)
