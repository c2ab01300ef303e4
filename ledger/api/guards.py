"""Role guards: Litestar runs them before it reads a request's parameters or body, so a caller
without the role gets 403 whatever else is wrong with the request. Lab checks need the record
and stay in the services (ledger.services.access.require_lab)."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from ledger.core import roles
from ledger.services.access import Principal, require_role

__all__ = ["actors", "admins", "auditors", "readers", "submitters"]


def _needs(allowed: Sequence[str]) -> Guard:
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        principal = connection.user
        assert isinstance(principal, Principal), "the token middleware runs before every guard"
        require_role(principal, allowed)

    return guard


readers = _needs(roles.READERS)
submitters = _needs(roles.SUBMITTERS)
actors = _needs(roles.ACTORS)
auditors = _needs(roles.AUDITORS)
admins = _needs(roles.ADMINS)
