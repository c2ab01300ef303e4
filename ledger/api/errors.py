"""Every error leaves as JSON with a stable ``code`` and a human ``message``; never a bare 500."""

from __future__ import annotations

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


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    retry_after = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(exc.body(), status_code=exc.status, headers=headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    body: dict[str, Any] = {"code": _CODES.get(exc.status_code, "error"), "message": exc.detail}
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
