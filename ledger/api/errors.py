"""Every error leaves as JSON with a stable ``code`` and a human ``message``; never a bare 500."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from ledger.db.faults import is_unavailable
from ledger.errors import ServiceError, Unavailable
from ledger.logs import get_logger

__all__ = ["exception_handlers"]

log = get_logger("ledger.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "upload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
    507: "insufficient_storage",
}


# A 404 quotes the id it did not find: at most this much of it (a 100 kB path segment is not
# sent back), and the message as a whole stays short whatever a service put in it.
_ECHO_MAX = 60
_NOT_FOUND_MESSAGE_MAX = 300
_QUOTED = re.compile("|".join(f"{q}[^{q}]{{{_ECHO_MAX + 1},}}{q}" for q in "'\""))


def _bounded(message: str) -> str:
    """Every quoted part of ``message`` cut to its first _ECHO_MAX characters and an ellipsis."""
    message = _QUOTED.sub(lambda m: m[0][: _ECHO_MAX + 1] + "…" + m[0][0], message)
    if len(message) > _NOT_FOUND_MESSAGE_MAX:
        message = message[:_NOT_FOUND_MESSAGE_MAX] + "…"
    return message


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = exc.body()
    if exc.status == 404 and isinstance(body.get("message"), str):
        body["message"] = _bounded(body["message"])
    return Response(body, status_code=exc.status, headers=headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    message = _bounded(exc.detail) if exc.status_code == 404 else exc.detail
    body: dict[str, Any] = {"code": _CODES.get(exc.status_code, "error"), "message": message}
    if isinstance(exc, ValidationException):
        body["code"] = "invalid_request"
        if exc.extra:
            body["problems"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_unavailable(exc):
        # PostgreSQL is down or restarting (ledger serve brings the embedded one back): the
        # request was fine and will be again, so say when to retry rather than "internal".
        log.warning("database_unavailable", stage="http", path=request.url.path, error=type(exc).__name__)
        return _service_error(request, DATABASE_UNAVAILABLE)
    log.exception("unhandled_error", stage="http", path=request.url.path)
    return Response(
        {"code": "internal", "message": "the server failed to handle this request; it has been logged"},
        status_code=HTTP_500_INTERNAL_SERVER_ERROR,
    )


DATABASE_UNAVAILABLE = Unavailable(
    "database_unavailable", "the database is not reachable right now; try again shortly", retry_after=5
)

exception_handlers: dict[Any, Any] = {
    ServiceError: _service_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
