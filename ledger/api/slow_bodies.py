"""Request bodies that stall or trickle are cut off with 408 ``request_timeout``.

Neither uvicorn nor Litestar bounds how long a request body may take: a client that sends a
byte a second holds a connection, a request task and, for an upload, a spool file for as long
as it likes. Every wait for body bytes is therefore bounded: nothing for ``idle`` seconds, or,
once ``grace`` seconds have been spent waiting for the body (so a client that pauses at the
start is not punished), an average below ``min_rate`` bytes a second, and the wait ends with
RequestTimeout. Only time spent waiting in ``receive`` counts, never the app's own work
between chunks, so a slow disk is not blamed on the client.

The exception is raised inside the app's call to ``receive``, so it unwinds whatever is reading
(an upload removes its partial spool file) and the app's error handlers answer it. An answer
sent before the whole body has arrived (a 408, but also a 401 or 429 that never read the body)
carries ``Connection: close``: otherwise the server would go on draining the rest of the body,
at the client's pace, to reuse the connection.
"""

from __future__ import annotations

import asyncio

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from ledger.config import Settings
from ledger.errors import ServiceError

__all__ = ["BodyDeadlines", "RequestTimeout"]


class RequestTimeout(ServiceError):
    status = 408
    default_code = "request_timeout"


class _Body:
    """One request's ``receive``, each wait for body bytes bounded."""

    def __init__(self, receive: Receive, *, idle: float, min_rate: int, grace: float) -> None:
        self._receive = receive
        self.idle, self.min_rate, self.grace = idle, min_rate, grace
        self.received = 0
        self.waited = 0.0
        self.complete = False
        self.timeout: RequestTimeout | None = None

    async def receive(self) -> ReceiveMessage:
        if self.complete:
            # After the body, receive only reports a disconnect (streamed answers listen for
            # it): that wait is as long as the answer, not the client's to cut short.
            return await self._receive()
        if self.timeout is not None:
            raise RequestTimeout(self.timeout.code, self.timeout.message)
        allowed, idle = self.idle, True
        if self.min_rate:
            # The wait that would bring the average below min_rate, once past the grace period.
            by_rate = max(self.grace, self.received / self.min_rate) - self.waited
            if by_rate < allowed:
                allowed, idle = by_rate, False
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = asyncio.timeout(max(allowed, 0.0))
        try:
            async with deadline:
                message = await self._receive()
        except TimeoutError:
            if not deadline.expired():
                raise
            self.timeout = self._timeout(idle=idle)
            raise RequestTimeout(self.timeout.code, self.timeout.message) from None
        finally:
            self.waited += loop.time() - started
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        else:  # http.disconnect: nothing more will come
            self.complete = True
        return message

    def _timeout(self, *, idle: bool) -> RequestTimeout:
        if idle:
            message = f"no part of the request body arrived for {self.idle:g} s; send the body without pausing"
        else:
            message = f"the request body arrived slower than {self.min_rate} bytes per second; send it faster"
        return RequestTimeout("request_timeout", message)


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


class BodyDeadlines:
    """ASGI middleware around the whole app (every route's body, whoever reads it)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.idle = settings.body_idle_seconds
        self.min_rate = settings.body_min_bytes_per_second
        self.grace = settings.body_rate_grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        body = _Body(receive, idle=self.idle, min_rate=self.min_rate, grace=self.grace)
        has_body = _has_body(scope)
        started = False

        async def send_closing(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if body.timeout is not None or (has_body and not body.complete):
                    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, body.receive, send_closing)
        except RequestTimeout as exc:
            # Raised past the app's own error handlers (read outside a route handler): answered
            # here, in the same shape, unless an answer is already on its way.
            if started:
                raise
            await _answer(exc, send_closing)
            return
        if body.timeout is not None and not started:
            # Whatever read the body swallowed the timeout and answered nothing.
            await _answer(body.timeout, send_closing)


async def _answer(exc: ServiceError, send: Send) -> None:
    content = msgspec.json.encode(exc.body())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})
