"""One ``http_request`` log line per HTTP request, whatever became of it.

It names the route's template, never the raw path (ids in paths are lab data, and a path is
whatever a client chose to send), ``unmatched`` for a path no route has; the principal is the
token's id, never the token or any header. ``request_bytes`` counts the body bytes the app read
(for an upload cut short, what arrived of it: what a resumed upload sends again is the sum over
its requests less the file's size). The same route template, status and duration go to
``observe`` (the latency histogram of GET /metrics), under the same rule: never a raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from ledger import audit_log
from ledger.logs import get_logger

__all__ = ["UNMATCHED", "AccessLog"]

log = get_logger("ledger.api")

UNMATCHED = "unmatched"


class AccessLog:
    """ASGI middleware around the whole app: routing included, so that 404s and 405s of paths
    no route serves are logged too. ``routes`` maps Litestar's path templates (``/imports/{task_id}``)
    to the routes' declared paths (``/imports/{task_id:str}``)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Callable[[], Mapping[str, str]],
        observe: Callable[[str | None, str, int, float], None] | None = None,
    ) -> None:
        self.app = app
        self._routes = routes
        self._observe = observe  # (method, route template, status, seconds) of every request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # What the client sees when the app raises before answering: the server's own 500.
        status = 500
        body_bytes = 0

        async def receive_counting() -> ReceiveMessage:
            nonlocal body_bytes
            message = await receive()
            if message["type"] == "http.request":
                body_bytes += len(message.get("body", b""))
            return message

        async def send_noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            # Audit events of this request carry its client and principal (ledger.audit_log).
            with audit_log.request(scope):
                await self.app(scope, receive_counting, send_noting)
        finally:
            template = scope.get("path_template")
            user = scope.get("user")
            token_id = getattr(user, "token_id", None)
            client = scope.get("client")
            route = UNMATCHED if template is None else self._routes().get(template, template)
            seconds = time.perf_counter() - started
            if self._observe is not None:
                self._observe(scope.get("method"), route, status, seconds)
            log.info(
                "http_request",
                stage="http",
                method=scope.get("method"),
                route=route,
                status=status,
                duration_ms=round(seconds * 1000, 1),
                request_bytes=body_bytes,
                principal=None if token_id is None else str(token_id),
                client=None if not client else client[0],
            )
