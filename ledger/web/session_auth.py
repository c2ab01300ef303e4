"""Who a page request comes from: the session its cookie names (ledger.services.sessions), or
nobody. Sets the scope's ``user`` (a Principal or None) and ``auth`` (the Session or None) for
the guards (ledger.web.guards) and the pages; refuses nothing itself, so that the sign-in page
and the error pages work without a session."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from ledger.services import sessions
from ledger.web.context import ledger_of

__all__ = ["SessionMiddleware"]


class SessionMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope)
            secret = connection.cookies.get(sessions.SESSION_COOKIE)
            session = await sessions.resolve(ledger_of(connection).db, secret) if secret else None
            scope["user"] = None if session is None else session.principal
            scope["auth"] = session
        await self.app(scope, receive, send)
