"""Errors the shell raises towards callers; the HTTP layer maps them to status and body.

ServiceError              code + human message (+ extra fields for the body)
├── InvalidRequest        400/422: the request is wrong, say what to change
├── Unauthorized          401: no valid token
├── Forbidden             403: valid token, wrong role or lab
├── NotFound              404
├── Conflict              409
├── PayloadTooLarge       413
├── TooManyRequests       429 (with retry_after seconds)
├── Unavailable           503 (with retry_after seconds)
└── InsufficientStorage   507
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "ServiceError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
]


class ServiceError(Exception):
    status = 500
    default_code = "internal"

    def __init__(self, code: str | None = None, message: str = "", **extra: Any) -> None:
        self.code = code or self.default_code
        self.message = message
        self.extra = extra
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class InvalidRequest(ServiceError):
    status = 422
    default_code = "invalid_request"


class Unauthorized(ServiceError):
    status = 401
    default_code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    default_code = "forbidden"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__("forbidden", message, **extra)


class NotFound(ServiceError):
    status = 404
    default_code = "not_found"


class Conflict(ServiceError):
    status = 409
    default_code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    default_code = "upload_too_large"


class TooManyRequests(ServiceError):
    status = 429
    default_code = "too_many_imports"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__("too_many_imports", message, retry_after=retry_after, **extra)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    status = 503
    default_code = "unavailable"

    def __init__(
        self, code: str | None = None, message: str = "", *, retry_after: int | None = None, **extra: Any
    ) -> None:
        if retry_after is not None:
            extra["retry_after"] = retry_after
        super().__init__(code, message, **extra)
        self.retry_after = retry_after


class InsufficientStorage(ServiceError):
    status = 507
    default_code = "spool_full"
