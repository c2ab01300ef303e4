"""Browser sessions: the pages under /ui/ and the API, called from those pages, authenticate a
browser by a session cookie instead of a bearer header.

A session is started with an API token (the same tokens, ledger.services.access.principal_of)
and speaks for that token for LEDGER_SESSION_HOURS, or until the token is revoked or expires,
or until it is signed out. The cookie holds a random secret; only its SHA-256 is stored.

Cross-site request forgery: a request a browser sends carries the cookie whoever made the page
that sent it. Every request that changes something must therefore also carry the session's
CSRF token, which only a page of ours can know: an HMAC of the session's secret, so it is
never stored and cannot be derived without the cookie (HttpOnly: no script can read it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime

import msgspec

from ledger import audit_log
from ledger.db import web_sessions as sessions_db
from ledger.db.pool import Executor
from ledger.errors import ServiceError
from ledger.services.access import Principal

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "PRESESSION_COOKIE",
    "SESSION_COOKIE",
    "CsrfFailed",
    "Session",
    "csrf_matches",
    "csrf_token_of",
    "end",
    "new_secret",
    "resolve",
    "start",
]

# The cookie that holds a session's secret.
SESSION_COOKIE = "ledger_session"
# The cookie that holds the secret of a form shown before there is a session (sign-in), whose
# CSRF token is derived from it the same way.
PRESESSION_COOKIE = "ledger_presession"
# Where a request carries the CSRF token: a header for scripts (and tus uploads), a form field
# for forms.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"

_CSRF_CONTEXT = b"ledger csrf token v1"


class CsrfFailed(ServiceError):
    """A request that changes something, on a session's authority, without its CSRF token."""

    status = 403
    default_code = "csrf_failed"


class Session(msgspec.Struct, frozen=True):
    principal: Principal
    csrf_token: str
    expires_at: datetime


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_of(secret: str) -> str:
    """The CSRF token that goes with the cookie secret ``secret``."""
    digest = hmac.new(secret.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def csrf_matches(secret: str | None, presented: str | None) -> bool:
    """Whether ``presented`` is the CSRF token of ``secret`` (in constant time)."""
    if not secret or not presented:
        return False
    return hmac.compare_digest(csrf_token_of(secret).encode(), presented.encode())


async def start(conn: Executor, principal: Principal, hours: int) -> tuple[str, Session]:
    """A new session for ``principal`` lasting ``hours``: its cookie secret and the session.
    Sessions that have ended meanwhile are cleared out first."""
    await sessions_db.delete_expired(conn)
    secret = new_secret()
    expires = await sessions_db.create_session(conn, secret, principal.token_id, hours)
    audit_log.after_commit(audit_log.event(audit_log.SIGNED_IN, actor=principal))
    return secret, Session(principal=principal, csrf_token=csrf_token_of(secret), expires_at=expires)


async def resolve(conn: Executor, secret: str) -> Session | None:
    """The session of the cookie secret ``secret``; None when there is none, it has expired, or
    its token has been revoked or has expired (which ends every session of that token)."""
    if not secret or len(secret) > 200:
        return None
    found = await sessions_db.find_session(conn, secret)
    if found is None or not found.token_ok:
        return None
    token = found.token
    principal = Principal(token_id=token.id, role=token.role, labs=token.labs, label=token.label)
    return Session(principal=principal, csrf_token=csrf_token_of(secret), expires_at=found.expires_at)


async def end(conn: Executor, secret: str) -> None:
    """Sign out: the session is deleted (its cookie no longer authenticates anything)."""
    if await sessions_db.delete_session(conn, secret):
        audit_log.after_commit(audit_log.event(audit_log.SIGNED_OUT))
