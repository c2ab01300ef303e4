"""Bearer-token authentication: every path but health and the API schema needs a token."""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)

from ledger.api.state import AppState
from ledger.db.tokens import find_token
from ledger.errors import Unauthorized
from ledger.services.access import Principal

__all__ = ["PUBLIC_PATHS", "TokenAuthMiddleware"]

PUBLIC_PATHS = ["^/health", "^/schema"]


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("unauthorized", "send a token in the Authorization header: 'Bearer <token>'")
        state: AppState = connection.app.state.ledger
        row = await find_token(state.db, token.strip())
        if row is None:
            raise Unauthorized("unauthorized", "the token is not valid (unknown or revoked)")
        return AuthenticationResult(user=Principal(token_id=row.id, role=row.role, labs=row.labs), auth=None)
