"""Who may see a page. Litestar runs guards before it reads a request's parameters or form, so
a refused caller learns nothing from what else is wrong with the request. A request with no
session is sent to sign in (ledger.web.errors); a role that may not see the page gets the 403
page. The roles are the API's (ledger.core.roles), checked by the same service function."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from ledger.services.access import Principal, require_role

__all__ = ["PageAccess", "SignInRequired", "principal_of_page"]


class SignInRequired(Exception):
    """No session (none, ended, or its token revoked or expired)."""


def principal_of_page(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The signed-in principal (set by ledger.web.session_auth); SignInRequired without one."""
    principal = connection.scope.get("user")
    if not isinstance(principal, Principal):
        raise SignInRequired
    return principal


class PageAccess:
    """Admits a signed-in caller of one of ``roles``: the guard of a page, and what the
    navigation reads to show the page only to those roles (ledger.web.nav)."""

    def __init__(self, roles: Sequence[str]) -> None:
        self.roles = tuple(roles)

    def admits(self, principal: Principal | None) -> bool:
        return principal is not None and principal.role in self.roles

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        require_role(principal_of_page(connection), self.roles)
