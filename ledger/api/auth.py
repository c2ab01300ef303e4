"""Bearer-token authentication: every path but health and the API schema needs a token."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)

from ledger.api.state import AppState
from ledger.errors import Unauthorized
from ledger.services.access import principal_of

__all__ = ["PUBLIC_PATHS", "TokenAuthMiddleware"]

# /health/workers says what runs where: for admins only.
PUBLIC_PATHS = ["^/health/(live|ready)$", "^/schema"]


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("unauthorized", "send a token in the Authorization header: 'Bearer <token>'")
        state: AppState = connection.app.state.ledger
        principal = await principal_of(state.db, token.strip())
        if principal is None:
            raise Unauthorized("unauthorized", "the token is not valid (unknown or revoked)")
        return AuthenticationResult(user=principal, auth=None)
