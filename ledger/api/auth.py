"""Bearer-token authentication: every path but health and the API schema needs a token.

Every 401 carries ``WWW-Authenticate: Bearer``; an expired token is told apart
(``token_expired``) from an unknown or revoked one (``unauthorized``). A client address that
presents too many bad tokens in a minute gets 429 ``too_many_failed_logins`` with
``Retry-After`` until the minute is over, whatever it sends meanwhile (counted per API process,
in memory, for a bounded number of addresses).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
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

from ledger.api.state import AppState
from ledger.errors import ServiceError, Unauthorized
from ledger.services.access import principal_of

__all__ = ["PUBLIC_PATHS", "FailedLogins", "TokenAuthMiddleware", "TooManyFailedLogins"]

# /health/workers says what runs where: for admins only.
PUBLIC_PATHS = ["^/health/(live|ready)$", "^/schema"]

WWW_AUTHENTICATE = 'Bearer realm="ledger"'


class TooManyFailedLogins(ServiceError):
    status = 429
    default_code = "too_many_failed_logins"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            "too_many_failed_logins",
            f"too many failed authentications from this address; try again in {retry_after} s",
            retry_after=retry_after,
        )
        self.retry_after = retry_after


class FailedLogins:
    """Failed authentications per client address in fixed one-minute windows. At most
    ``clients_max`` addresses are remembered: past that, ended windows are dropped first, then
    the oldest."""

    WINDOW_SECONDS = 60.0

    def __init__(
        self, per_minute: int, *, clients_max: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.clients_max = clients_max
        self.clock = clock
        # address -> (window start, failures in it), in the order the windows started.
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None if it may now."""
        window = self._windows.get(client)
        if window is None:
            return None
        start, failures = window
        left = start + self.WINDOW_SECONDS - self.clock()
        if left <= 0 or failures < self.per_minute:
            return None
        return max(1, math.ceil(left))

    def failed(self, client: str) -> None:
        now = self.clock()
        window = self._windows.get(client)
        if window is None or now - window[0] >= self.WINDOW_SECONDS:
            self._windows.pop(client, None)
            self._windows[client] = (now, 1)
            self._evict(now)
        else:
            self._windows[client] = (window[0], window[1] + 1)

    def _evict(self, now: float) -> None:
        # Windows are kept in the order they started: the ended ones are at the front.
        while self._windows:
            start, _ = next(iter(self._windows.values()))
            if now - start < self.WINDOW_SECONDS:
                break
            self._windows.popitem(last=False)
        while len(self._windows) > self.clients_max:
            self._windows.popitem(last=False)


def _failed_logins(connection: ASGIConnection[Any, Any, Any, Any], state: AppState) -> FailedLogins:
    """This app's counter (the middleware is instantiated per route, the app state is shared)."""
    app_state = connection.app.state
    counter = app_state.get("failed_logins")
    if not isinstance(counter, FailedLogins):
        counter = FailedLogins(state.settings.auth_failures_per_minute)
        app_state["failed_logins"] = counter
    return counter


class TokenAuthMiddleware(AbstractAuthenticationMiddleware):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except (Unauthorized, TooManyFailedLogins) as exc:
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
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("unauthorized", "send a token in the Authorization header: 'Bearer <token>'")
        state: AppState = connection.app.state.ledger
        failures = _failed_logins(connection, state)
        client = connection.client.host if connection.client else "unknown"
        # Checked before the lookup: while an address is throttled even a right guess is
        # refused, so guessing gains nothing, and a flood costs no queries.
        if (retry_after := failures.retry_after(client)) is not None:
            raise TooManyFailedLogins(retry_after)
        try:
            principal = await principal_of(state.db, token.strip())
        except Unauthorized:
            failures.failed(client)
            raise
        return AuthenticationResult(user=principal, auth=None)
