"""Forms: every POST under /ui/ carries the CSRF token of the browser's session (or, before
there is one, of its sign-in cookie) in the field ``csrf_token``. Checked by the /ui router
after the guards (a caller refused for who it is hears that first) and before the form is
read into the handler's parameters: a forged or missing token changes nothing."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from litestar import Request
from litestar.enums import RequestEncodingType
from litestar.params import Body

from ledger.services import sessions
from ledger.services.access import denied
from ledger.services.sessions import CsrfFailed

__all__ = ["Form", "check_csrf"]

T = TypeVar("T")

# A handler's form: ``data: Form[SomeStruct]``.
Form = Annotated[T, Body(media_type=RequestEncodingType.URL_ENCODED)]

_SAFE_METHODS = frozenset({"GET", "HEAD"})


async def check_csrf(request: Request[Any, Any, Any]) -> None:
    if request.method in _SAFE_METHODS:
        return
    form = await request.form()
    presented = form.get(sessions.CSRF_FIELD)
    token = presented if isinstance(presented, str) else None
    cookies = request.cookies
    if not (
        sessions.csrf_matches(cookies.get(sessions.SESSION_COOKIE), token)
        or sessions.csrf_matches(cookies.get(sessions.PRESESSION_COOKIE), token)
    ):
        refusal = CsrfFailed(
            "csrf_failed",
            "this form did not come from this site's page, or the page is older than your session: "
            "nothing was changed; reload the page and send it again",
        )
        denied(None, "the form did not carry the session's CSRF token", refusal.code)
        raise refusal
