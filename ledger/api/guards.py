"""Role guards: Litestar runs them before it reads a request's parameters or body, so a caller
without the role gets 403 whatever else is wrong with the request. Lab checks need the record
and stay in the services (ledger.services.access.require_lab)."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ledger.core import roles
from ledger.services.access import Principal, require_role

__all__ = ["RoleGuard", "actors", "admins", "auditors", "readers", "submitters"]


class RoleGuard:
    """Admits the ``roles``. A class rather than a closure so that the roles can be read back:
    the API schema names them and documents the 403 (ledger.api.openapi), and the schema's
    fuzz test calls each operation as a role it admits."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.roles = tuple(allowed)

    def __call__(self, connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        principal = connection.user
        assert isinstance(principal, Principal), "the token middleware runs before every guard"
        require_role(principal, self.roles)


readers = RoleGuard(roles.READERS)
submitters = RoleGuard(roles.SUBMITTERS)
actors = RoleGuard(roles.ACTORS)
auditors = RoleGuard(roles.AUDITORS)
admins = RoleGuard(roles.ADMINS)
