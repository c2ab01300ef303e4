"""Bearer tokens: stored as SHA-256 digests, looked up by digest; they expire, are revoked and
rotated, and record when they were last used (at most once a minute, in the lookup itself)."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from ledger.core import roles
from ledger.db.pool import Conn, Executor

__all__ = [
    "TokenInfo",
    "TokenLookup",
    "TokenRow",
    "any_admin",
    "create_first_admin",
    "create_token",
    "find_token",
    "get_token",
    "list_tokens",
    "revoke_token",
    "rotate_token",
    "token_digest",
    "token_label",
]

_PREFIX = "ldg_"


class TokenRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    role: str
    labs: tuple[str, ...]
    # Whom the token is for, as an admin wrote it: the audit log's user.name.
    label: str | None = None


class TokenLookup(msgspec.Struct, frozen=True):
    """An unrevoked token found by its secret; ``expired`` tokens must be refused."""

    row: TokenRow
    expired: bool


class TokenInfo(msgspec.Struct, frozen=True):
    """What an admin may see of a token: everything but its secret (which is never stored)."""

    id: uuid.UUID
    role: str
    labs: tuple[str, ...]
    label: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


_INFO_COLUMNS = "id, role, labs, label, created_at, expires_at, last_used_at, revoked_at"


def _info(row: Any) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        role=row["role"],
        labs=tuple(row["labs"]),
        label=row["label"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def token_digest(token: str) -> bytes:
    # The token carries 256 random bits, so a plain digest is enough: no password stretching.
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    conn: Executor,
    *,
    role: str,
    labs: Sequence[str] = (),
    label: str | None = None,
    expires_in_days: int | None = None,
) -> tuple[str, TokenRow]:
    """A new token; it expires ``expires_in_days`` from now, or never (None)."""
    token = _PREFIX + secrets.token_urlsafe(32)
    row_id = uuid.uuid4()
    await conn.execute(
        """
        INSERT INTO tokens (id, token_hash, role, labs, label, expires_at)
        VALUES ($1, $2, $3, $4, $5, now() + make_interval(days => $6::int))
        """,
        row_id,
        token_digest(token),
        role,
        list(labs),
        label,
        expires_in_days,
    )
    return token, TokenRow(id=row_id, role=role, labs=tuple(labs), label=label)


async def find_token(conn: Executor, token: str) -> TokenLookup | None:
    """The unrevoked token with this secret (None for an unknown or revoked one), in one
    statement that also records its use, at most once a minute so that a busy token does not
    write on every request. An expired token is found (``expired``) but not touched."""
    row = await conn.fetchrow(
        """
        WITH found AS (
            SELECT id, role, labs, label, last_used_at,
                   expires_at IS NOT NULL AND expires_at <= now() AS expired
            FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL
        ), touched AS (
            UPDATE tokens SET last_used_at = now()
            FROM found
            WHERE tokens.id = found.id AND NOT found.expired
              AND (found.last_used_at IS NULL OR found.last_used_at < now() - interval '1 minute')
        )
        SELECT id, role, labs, label, expired FROM found
        """,
        token_digest(token),
    )
    if row is None:
        return None
    found = TokenRow(id=row["id"], role=row["role"], labs=tuple(row["labs"]), label=row["label"])
    return TokenLookup(row=found, expired=row["expired"])


async def get_token(conn: Executor, token_id: uuid.UUID) -> TokenInfo | None:
    row = await conn.fetchrow(f"SELECT {_INFO_COLUMNS} FROM tokens WHERE id = $1", token_id)
    return None if row is None else _info(row)


async def list_tokens(conn: Executor) -> list[TokenInfo]:
    """Every token, oldest first."""
    rows = await conn.fetch(f"SELECT {_INFO_COLUMNS} FROM tokens ORDER BY created_at, id")
    return [_info(row) for row in rows]


async def revoke_token(conn: Executor, token_id: uuid.UUID) -> TokenInfo | None:
    """Revoke the token (a revoked one keeps its first revocation time); None if there is none."""
    row = await conn.fetchrow(
        f"""
        UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
        RETURNING {_INFO_COLUMNS}
        """,
        token_id,
    )
    return None if row is None else _info(row)


async def rotate_token(conn: Conn, token_id: uuid.UUID) -> tuple[str, TokenInfo] | None:
    """A new secret for the token's role, labs and label, with the same lifetime from now; the
    old token is revoked in the same transaction. None if there is no such token; a revoked one
    is returned unchanged with an empty secret (the caller refuses it)."""
    async with conn.transaction():
        old = await conn.fetchrow(
            f"SELECT {_INFO_COLUMNS}, expires_at - created_at AS lifetime FROM tokens WHERE id = $1 FOR UPDATE",
            token_id,
        )
        if old is None:
            return None
        if old["revoked_at"] is not None:
            return "", _info(old)
        lifetime: dt.timedelta | None = old["lifetime"]
        days = None if lifetime is None else max(1, round(lifetime.total_seconds() / 86_400))
        token, new = await create_token(
            conn, role=old["role"], labs=old["labs"], label=old["label"], expires_in_days=days
        )
        await conn.execute("UPDATE tokens SET revoked_at = now() WHERE id = $1", token_id)
        info = await get_token(conn, new.id)
        assert info is not None
        return token, info


async def token_label(conn: Executor, token_id: uuid.UUID) -> str | None:
    label: str | None = await conn.fetchval("SELECT label FROM tokens WHERE id = $1", token_id)
    return label


async def create_first_admin(conn: Conn, *, expires_in_days: int | None = None) -> str | None:
    """An admin token if the tokens table is empty (a first start), else None: once any token
    exists, an admin is made only on purpose (`ledger token create --role admin`), never because
    every admin token was revoked. Two servers starting at once must not both mint one, hence
    the lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger.first_admin'))")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tokens)"):
            return None
        token, _ = await create_token(conn, role=roles.ADMIN, label="first start", expires_in_days=expires_in_days)
        return token


async def any_admin(conn: Executor) -> bool:
    """Whether an admin token can still authenticate (unrevoked and unexpired)."""
    return bool(
        await conn.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM tokens WHERE role = $1 AND revoked_at IS NULL
                           AND (expires_at IS NULL OR expires_at > now()))
            """,
            roles.ADMIN,
        )
    )
