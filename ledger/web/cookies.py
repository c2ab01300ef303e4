"""The cookies the pages set: the session's (its secret) and the sign-in form's (the secret its
CSRF token is derived from before there is a session). HttpOnly, so no script reads them;
SameSite=Strict, so no other site's page sends them; Secure when the page came over https."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie

from ledger.services import sessions

__all__ = ["presession_cookie", "served_securely", "session_cookie", "session_cookie_cleared"]

# The session's cookie goes with every request to the service: the pages and the API they call.
_SESSION_PATH = "/"
_PRESESSION_PATH = "/ui"
_PRESESSION_SECONDS = 24 * 3600


def served_securely(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def _cookie(request: Request[Any, Any, Any], key: str, value: str, *, max_age: int, path: str) -> Cookie:
    """Every cookie the pages set: HttpOnly, SameSite=Strict, Secure over https."""
    return Cookie(
        key=key,
        value=value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=served_securely(request),
    )


def session_cookie(request: Request[Any, Any, Any], secret: str, expires_at: datetime) -> Cookie:
    seconds = max(0, round((expires_at - datetime.now(UTC)).total_seconds()))
    return _cookie(request, sessions.SESSION_COOKIE, secret, max_age=seconds, path=_SESSION_PATH)


def session_cookie_cleared(request: Request[Any, Any, Any]) -> Cookie:
    return _cookie(request, sessions.SESSION_COOKIE, "", max_age=0, path=_SESSION_PATH)


def presession_cookie(request: Request[Any, Any, Any], secret: str) -> Cookie:
    return _cookie(request, sessions.PRESESSION_COOKIE, secret, max_age=_PRESESSION_SECONDS, path=_PRESESSION_PATH)
