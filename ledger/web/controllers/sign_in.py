"""/ui/sign-in and /ui/sign-out: a browser signs in with an API token and gets a session."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from ledger import audit_log
from ledger.errors import Unauthorized
from ledger.services import sessions
from ledger.services.access import principal_of
from ledger.services.failed_logins import failed_logins
from ledger.web.cookies import session_cookie, session_cookie_cleared
from ledger.web.errors import SIGN_IN_PATH
from ledger.web.forms import Form
from ledger.web.nav import HOME
from ledger.web.pages import Page

__all__ = ["SignInPages"]

# Where sign-in may send the browser next: a page of ours, never another site ("//host",
# "/\\host" and the like are other sites to a browser).
_NEXT = re.compile(r"/ui(/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?")
_NEXT_CHARS_MAX = 2_000


class SignInForm(msgspec.Struct, frozen=True):
    token: str = ""
    next: str = ""
    csrf_token: str = ""


def safe_next(raw: str | None) -> str:
    if raw and len(raw) <= _NEXT_CHARS_MAX and _NEXT.fullmatch(raw) and "//" not in raw:
        return raw
    return HOME.path


class SignInPages(Controller):
    path = "/"
    include_in_schema = False

    @get(SIGN_IN_PATH.removeprefix("/ui"))
    async def sign_in_page(
        self, page: NamedDependency[Page], next: FromQuery[str | None] = None, ended: FromQuery[str | None] = None
    ) -> Template:
        return page.render(
            "sign_in.html",
            title="Sign in",
            next=safe_next(next),
            notice="Your session has ended: sign in again." if ended else None,
            error=None,
        )

    @post(SIGN_IN_PATH.removeprefix("/ui"), status_code=303)
    async def sign_in(
        self, page: NamedDependency[Page], request: Request[Any, Any, Any], data: Form[SignInForm]
    ) -> Response[Any]:
        ledger = page.ledger
        # The API's counter: a guess through this form counts as one through a bearer header.
        failures = failed_logins(request.app.state, ledger.settings.auth_failures_per_minute)
        client = request.client.host if request.client else "unknown"
        failures.check(client)
        token = data.token.strip()
        try:
            if not token:
                raise Unauthorized("unauthorized", "Enter a token.")
            principal = await principal_of(ledger.db, token)
        except Unauthorized as exc:
            if token:
                failures.failed(client)
                failed = audit_log.event(audit_log.SIGN_IN_FAILED, outcome="failure", error_code=exc.code)
                audit_log.emit(failed)
            message = {
                "token_expired": "That token has expired; ask an admin for a new one.",
                "unauthorized": "That token is not valid (unknown or revoked).",
            }.get(exc.code, exc.message)
            return page.render(
                "sign_in.html",
                title="Sign in",
                status_code=401,
                next=safe_next(data.next),
                notice=None,
                error=message if token else "Enter a token.",
            )
        secret, session = await sessions.start(ledger.db, principal, ledger.settings.session_hours)
        return page.redirect(safe_next(data.next), cookies=[session_cookie(request, secret, session.expires_at)])

    @post("/sign-out", status_code=303)
    async def sign_out(self, page: NamedDependency[Page], request: Request[Any, Any, Any]) -> Response[Any]:
        if secret := request.cookies.get(sessions.SESSION_COOKIE):
            await sessions.end(page.ledger.db, secret)
        return page.redirect(SIGN_IN_PATH, cookies=[session_cookie_cleared(request)])
