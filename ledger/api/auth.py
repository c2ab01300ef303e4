"""Bearer-token authentication: every path but health, the API schema and the pages (which
authenticate themselves, ledger.web) needs a token, or the session cookie of a browser signed
in to the pages (ledger.services.sessions); a request that changes something on a session's
authority must also send the session's CSRF token in ``X-CSRF-Token`` (403 ``csrf_failed``).

Every 401 carries ``WWW-Authenticate: Bearer``; an expired token is told apart
(``token_expired``) from an unknown or revoked one (``unauthorized``). A client address that
presents too many bad tokens in a minute gets 429 ``too_many_failed_logins`` with
``Retry-After`` until the minute is over, whatever it sends meanwhile (counted per API process,
in memory, for a bounded number of addresses).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.middleware.authentication import (
    AbstractAuthenticationMiddleware,
    AuthenticationResult,
)
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from ledger import audit_log
from ledger.api.state import AppState
from ledger.errors import Unauthorized
from ledger.services import sessions
from ledger.services.access import Principal, denied, principal_of
from ledger.services.failed_logins import FailedLogins, TooManyFailedLogins, failed_logins
from ledger.services.sessions import CsrfFailed

__all__ = ["PUBLIC_PATHS", "WEB_PATHS", "CsrfFailed", "FailedLogins", "TokenAuthMiddleware", "TooManyFailedLogins"]

# /health/workers says what runs where: for admins only.
# "^/schema" alone would also exempt any later route that merely starts so (/schemas/…).
# /metrics: aggregates only, no id, path or lab in any label (ledger.api.controllers.metrics).
PUBLIC_PATHS = ["^/health/(live|ready)$", "^/schema(/|$)", "^/metrics$"]
# The pages (ledger.web) authenticate their own way: a session, or a redirect to sign in.
WEB_PATHS = ["^/$", "^/ui(/|$)"]

WWW_AUTHENTICATE = 'Bearer realm="ledger"'


def _failed_logins(connection: ASGIConnection[Any, Any, Any, Any], state: AppState) -> FailedLogins:
    """This app's counter (the middleware is instantiated per route, the app state is shared)."""
    return failed_logins(connection.app.state, state.settings.auth_failures_per_minute)


# Requests that change nothing, which a browser's session may send without a CSRF token.
_SAFE_METHODS = frozenset({"GET", "HEAD"})


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (Unauthorized, TooManyFailedLogins, CsrfFailed) as exc:
            # Answered here rather than by the app's exception handlers: every 401 must carry
            # WWW-Authenticate, and a 429 its Retry-After.
            if scope["type"] != ScopeType.HTTP:
                raise
            headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if exc.status == 401 else {}
            if isinstance(exc, TooManyFailedLogins):
                headers["Retry-After"] = str(exc.retry_after)
            response = ASGIResponse(
                body=msgspec.json.encode(exc.body()),
                status_code=exc.status,
                media_type="application/json",
                headers=headers,
            )
            await response(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        state: AppState = connection.app.state.ledger
        if not header and (secret := connection.cookies.get(sessions.SESSION_COOKIE)):
            return AuthenticationResult(user=await _session_principal(connection, state, secret), auth=None)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("unauthorized", "send a token in the Authorization header: 'Bearer <token>'")
        failures = _failed_logins(connection, state)
        client = connection.client.host if connection.client else "unknown"
        # Checked before the lookup: while an address is throttled even a right guess is
        # refused, so guessing gains nothing, and a flood costs no queries.
        failures.check(client)
        try:
            principal = await principal_of(state.db, token.strip())
        except Unauthorized as exc:
            failures.failed(client)
            audit_log.emit(audit_log.event(audit_log.AUTHENTICATION_FAILED, outcome="failure", error_code=exc.code))
            raise
        return AuthenticationResult(user=principal, auth=None)


async def _session_principal(connection: ASGIConnection[Any, Any, Any, Any], state: AppState, secret: str) -> Principal:
    """A browser signed in to the pages (ledger.web) calls the API with its session cookie; what
    it sends to change something must carry the session's CSRF token in X-CSRF-Token, which a
    page of another site cannot know. A session secret is 256 random bits: a bad one is not
    counted as a guess (a browser keeps sending an ended session's cookie until it expires)."""
    session = await sessions.resolve(state.db, secret)
    if session is None:
        raise Unauthorized("unauthorized", "the session has ended; sign in again, or send a bearer token")
    method = connection.scope.get("method", "GET")
    if method not in _SAFE_METHODS and not sessions.csrf_matches(secret, connection.headers.get(sessions.CSRF_HEADER)):
        denied(session.principal, f"the session's request did not send its {sessions.CSRF_HEADER}", "csrf_failed")
        raise CsrfFailed(
            "csrf_failed", f"a request authenticated by a session cookie must send the session's {sessions.CSRF_HEADER}"
        )
    return session.principal
