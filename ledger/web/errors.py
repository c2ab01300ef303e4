"""Errors on the pages are pages: no session sends a GET to sign in (303) and answers a POST 401;
a role that may not see the page gets the 403 page; every other refusal is the error page with
the service's own status, code and message (the API's vocabulary), never a stack trace."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ledger.db.faults import is_unavailable
from ledger.errors import ServiceError
from ledger.logs import get_logger
from ledger.services import sessions
from ledger.services.failed_logins import TooManyFailedLogins
from ledger.web.cookies import session_cookie_cleared
from ledger.web.guards import SignInRequired
from ledger.web.pages import Page

__all__ = ["SIGN_IN_PATH", "exception_handlers", "sign_in_url"]

log = get_logger("ledger.web")

SIGN_IN_PATH = "/ui/sign-in"
_TITLES = {
    400: "Bad request",
    401: "Sign in again",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    422: "Cannot do that",
    429: "Too many attempts",
    503: "Unavailable",
}


def sign_in_url(next_path: str | None = None, *, ended: bool = False) -> str:
    query = {}
    if next_path:
        query["next"] = next_path
    if ended:
        query["ended"] = "1"
    return SIGN_IN_PATH + (f"?{urlencode(query)}" if query else "")


def _sign_in(request: Request[Any, Any, Any], _: SignInRequired) -> Response[Any]:
    page = Page(request)
    ended = bool(request.cookies.get(sessions.SESSION_COOKIE))
    cleared = [session_cookie_cleared(request)] if ended else []
    if request.method in ("GET", "HEAD"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return page.redirect(sign_in_url(target, ended=ended), cookies=cleared)
    return page.render(
        "error.html",
        title=_TITLES[401],
        status_code=401,
        cookies=cleared,
        code="session_required",
        message="Your session has ended (or you are not signed in): nothing was changed. Sign in and try again.",
        sign_in=sign_in_url(),
    )


def _service_error(request: Request[Any, Any, Any], exc: ServiceError) -> Response[Any]:
    page = Page(request)
    template = "forbidden.html" if exc.status == 403 and exc.code == "forbidden" else "error.html"
    response = page.render(
        template,
        title=_TITLES.get(exc.status, "Error"),
        status_code=exc.status,
        code=exc.code,
        message=exc.message,
    )
    if isinstance(exc, TooManyFailedLogins):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    code = "invalid_request" if isinstance(exc, ValidationException) else "error"
    message = exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        message = "; ".join(
            str(p.get("message", "")) + f" ({p.get('key', '')})" for p in exc.extra if isinstance(p, dict)
        )
    return Page(request).render(
        "error.html",
        title=_TITLES.get(exc.status_code, "Error"),
        status_code=exc.status_code,
        code=code,
        message=message or "the request was refused",
    )


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if is_unavailable(exc):
        log.warning("database_unavailable", stage="web", path=request.url.path, error=type(exc).__name__)
        status, code, message = (
            503,
            "database_unavailable",
            "The database is not reachable right now; try again shortly.",
        )
    else:
        log.exception("unhandled_error", stage="web", path=request.url.path)
        status, code, message = 500, "internal", "The server failed to handle this request; it has been logged."
    return Page(request).render("error.html", title="Error", status_code=status, code=code, message=message)


exception_handlers: dict[Any, Any] = {
    SignInRequired: _sign_in,
    ServiceError: _service_error,
    # The app maps ValidationException to the API's JSON answer: named here, so the pages' wins.
    ValidationException: _http_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}
