"""The page-controller pattern: every page handler takes ``page: Page`` (a dependency of the
/ui router) and returns ``page.render(template, title=..., **context)`` or
``page.redirect(path)``.

A rendered template always gets ``page`` (its ``principal``, ``csrf_token``, ``csrf_input``
and ``nav``) and ``title``; templates extend ``base.html`` and fill ``{% block content %}``
(and ``{% block scripts %}`` for a script file of ours under /ui/static). Every form that
posts includes ``{{ page.csrf_input }}``: the /ui router refuses a POST without it
(ledger.web.forms).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Request
from litestar.datastructures import Cookie
from litestar.response import Redirect, Template
from markupsafe import Markup

from ledger.services import sessions
from ledger.services.access import Principal
from ledger.services.sessions import Session
from ledger.web.context import LedgerState, ledger_of
from ledger.web.cookies import presession_cookie
from ledger.web.nav import Section, visible_sections

__all__ = ["Page", "provide_page"]

_SECRET_CHARS_MAX = 200


class Page:
    """One page request: who asks, its session, the app's state, and how to answer."""

    def __init__(self, request: Request[Any, Any, Any]) -> None:
        self.request = request
        auth = request.scope.get("auth")
        self.session: Session | None = auth if isinstance(auth, Session) else None
        self.principal: Principal | None = None if self.session is None else self.session.principal
        self.ledger: LedgerState = ledger_of(request)
        self._new_presession: str | None = None

    @property
    def csrf_token(self) -> str:
        """The session's CSRF token; before there is one, that of the sign-in form's cookie (made
        now, and set with the answer, when the browser has none)."""
        if self.session is not None:
            return self.session.csrf_token
        secret = self.request.cookies.get(sessions.PRESESSION_COOKIE)
        if not secret or len(secret) > _SECRET_CHARS_MAX:
            if self._new_presession is None:
                self._new_presession = sessions.new_secret()
            secret = self._new_presession
        return sessions.csrf_token_of(secret)

    @property
    def csrf_input(self) -> Markup:
        return Markup('<input type="hidden" name="{}" value="{}">').format(sessions.CSRF_FIELD, self.csrf_token)

    @property
    def nav(self) -> list[Section]:
        return visible_sections(self.principal)

    @property
    def path(self) -> str:
        return self.request.url.path

    def render(
        self, template: str, *, title: str, status_code: int = 200, cookies: Sequence[Cookie] = (), **context: Any
    ) -> Template:
        values = {"page": self, "title": title, "csrf_token": self.csrf_token, **context}
        return Template(template_name=template, context=values, status_code=status_code, cookies=self._cookies(cookies))

    def redirect(self, path: str, *, cookies: Sequence[Cookie] = ()) -> Redirect:
        """See Other: after a form, the browser GETs ``path`` (a reload does not post again)."""
        return Redirect(path=path, status_code=303, cookies=self._cookies(cookies))

    def _cookies(self, cookies: Sequence[Cookie]) -> list[Cookie]:
        extra = [] if self._new_presession is None else [presession_cookie(self.request, self._new_presession)]
        return [*cookies, *extra]


async def provide_page(request: Request[Any, Any, Any]) -> Page:
    return Page(request)
