"""Security headers on every response, the router's own 404/405 and the error handlers' too.

A ``before_send`` hook (not a route middleware) so that nothing the app sends escapes it:
``nosniff``, no referrer, no framing, a strict Content-Security-Policy (the UI's assets are
ours: 'self' only, no inline script), and ``Cache-Control: no-store`` on every answer to a
request that needs or carries a token, so no proxy or browser keeps another user's data.
"""

from __future__ import annotations

import re

from litestar.datastructures import MutableScopeHeaders
from litestar.types import Message, Scope

from ledger.api.auth import PUBLIC_PATHS

__all__ = ["CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "security_headers"]

CONTENT_SECURITY_POLICY = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
}
_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
# Swagger UI styles its elements with style attributes and draws icons from data: URIs; its
# page may do that, and still runs no script but the service's own files.
SWAGGER_PAGE_POLICY = CONTENT_SECURITY_POLICY + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
# ReDoc styles its page the same way (styled-components) and embeds its icon font as a data: URI.
REDOC_PAGE_POLICY = SWAGGER_PAGE_POLICY + "; font-src 'self' data:"
_PAGE_POLICIES = {"/schema/swagger": SWAGGER_PAGE_POLICY, "/schema/redoc": REDOC_PAGE_POLICY}


def _authenticated(scope: Scope) -> bool:
    """The request needs a token (every path but the public ones), or sent one anyway."""
    if not _PUBLIC.match(scope.get("path", "")):
        return True
    return any(name.lower() == b"authorization" for name, _ in scope.get("headers", ()))


async def security_headers(message: Message, scope: Scope) -> None:
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    if (page_policy := _PAGE_POLICIES.get(scope.get("path", ""))) is not None:
        headers["Content-Security-Policy"] = page_policy
    if _authenticated(scope):
        headers["Cache-Control"] = "no-store"
