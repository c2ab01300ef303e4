"""Browser sessions (migration 0014): stored by the SHA-256 of their secret, found together with
the token they signed in with, so that one statement says whether both are still good."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

import msgspec

from ledger.db.pool import Executor
from ledger.db.tokens import TokenRow

__all__ = ["SessionLookup", "create_session", "delete_expired", "delete_session", "find_session", "secret_digest"]


class SessionLookup(msgspec.Struct, frozen=True):
    """A session whose own expiry has not passed, with its token; ``token_ok`` is false when the
    token has since been revoked or has expired (the session must then be refused)."""

    id: uuid.UUID
    token: TokenRow
    token_ok: bool
    expires_at: dt.datetime


def secret_digest(secret: str) -> bytes:
    # The secret carries 256 random bits, so a plain digest is enough: no password stretching.
    return hashlib.sha256(secret.encode()).digest()


async def create_session(conn: Executor, secret: str, token_id: uuid.UUID, hours: int) -> dt.datetime:
    """Record a session for ``secret`` lasting ``hours``; returns when it expires."""
    expires: dt.datetime = await conn.fetchval(
        """
        INSERT INTO web_sessions (id, secret_hash, token_id, expires_at)
        VALUES ($1, $2, $3, now() + make_interval(hours => $4::int))
        RETURNING expires_at
        """,
        uuid.uuid4(),
        secret_digest(secret),
        token_id,
        hours,
    )
    return expires


async def find_session(conn: Executor, secret: str) -> SessionLookup | None:
    """The unexpired session with this secret and its token, or None."""
    row = await conn.fetchrow(
        """
        SELECT s.id, s.expires_at, t.id AS token_id, t.role, t.labs, t.label,
               t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now()) AS token_ok
        FROM web_sessions s JOIN tokens t ON t.id = s.token_id
        WHERE s.secret_hash = $1 AND s.expires_at > now()
        """,
        secret_digest(secret),
    )
    if row is None:
        return None
    token = TokenRow(id=row["token_id"], role=row["role"], labs=tuple(row["labs"]), label=row["label"])
    return SessionLookup(id=row["id"], token=token, token_ok=row["token_ok"], expires_at=row["expires_at"])


async def delete_session(conn: Executor, secret: str) -> bool:
    """End the session with this secret; whether there was one."""
    deleted = await conn.fetchval(
        "DELETE FROM web_sessions WHERE secret_hash = $1 RETURNING true", secret_digest(secret)
    )
    return bool(deleted)


async def delete_expired(conn: Executor) -> int:
    """Remove sessions past their expiry or whose token is revoked or expired; how many."""
    status: str = await conn.execute(
        """
        DELETE FROM web_sessions s USING tokens t
        WHERE t.id = s.token_id
          AND (s.expires_at <= now() OR t.revoked_at IS NOT NULL
               OR (t.expires_at IS NOT NULL AND t.expires_at <= now()))
        """
    )
    return int(status.rsplit(" ", 1)[-1])
