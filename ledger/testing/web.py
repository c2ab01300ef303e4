"""The pages (ledger.web) for tests that speak HTTP to them without a browser: a client per
signed-in user, holding its session cookie, that sends forms with their CSRF token."""

from __future__ import annotations

import re
from typing import Any

import httpx

__all__ = ["WebUser", "csrf_of", "sign_in"]

_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def csrf_of(html: str) -> str:
    """The CSRF token a page was rendered with (its ``<meta name="csrf-token">``)."""
    found = _CSRF_META.search(html)
    assert found, "the page has no csrf-token meta"
    return found.group(1)


class WebUser:
    """One browser's cookies, over the app's test client (which runs the app on its own event
    loop, so another client cannot be made beside it): each request swaps this user's cookies
    in and out of the client, so several users may take turns on one client."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies = httpx.Cookies()
        self.csrf = ""

    async def __aenter__(self) -> WebUser:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.cookies.clear()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        self.client.cookies = httpx.Cookies(self.cookies)
        try:
            response = await self.client.request(method, path, follow_redirects=False, **kw)
        finally:
            self.cookies = httpx.Cookies(self.client.cookies)
            self.client.cookies = httpx.Cookies()
        if response.headers.get("content-type", "").startswith("text/html") and "csrf-token" in response.text:
            self.csrf = csrf_of(response.text)
        return response

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None) -> httpx.Response:
        """A form post with this browser's CSRF token (or ``csrf``, to forge one)."""
        form = {**(data or {}), "csrf_token": self.csrf if csrf is None else csrf}
        return await self.request("POST", path, data=form)


async def sign_in(client: httpx.AsyncClient, token: str) -> WebUser:
    """A WebUser signed in with ``token``."""
    user = WebUser(client)
    await user.get("/ui/sign-in")
    response = await user.post("/ui/sign-in", {"token": token})
    assert response.status_code == 303, response.text
    await user.get("/ui/")
    return user
