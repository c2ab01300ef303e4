"""Bearer tokens: stored as SHA-256 digests, looked up by digest."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence

import msgspec

from ledger.core import roles
from ledger.db.pool import Conn, Executor

__all__ = ["TokenRow", "any_admin", "create_first_admin", "create_token", "find_token", "token_digest", "token_label"]

_PREFIX = "ldg_"


class TokenRow(msgspec.Struct, frozen=True):
    id: uuid.UUID
    role: str
    labs: tuple[str, ...]


def token_digest(token: str) -> bytes:
    # The token carries 256 random bits, so a plain digest is enough: no password stretching.
    return hashlib.sha256(token.encode()).digest()


async def create_token(
    conn: Executor,
    *,
    role: str,
    labs: Sequence[str] = (),
    label: str | None = None,
) -> tuple[str, TokenRow]:
    token = _PREFIX + secrets.token_urlsafe(32)
    row_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO tokens (id, token_hash, role, labs, label) VALUES ($1, $2, $3, $4, $5)",
        row_id,
        token_digest(token),
        role,
        list(labs),
        label,
    )
    return token, TokenRow(id=row_id, role=role, labs=tuple(labs))


async def find_token(conn: Executor, token: str) -> TokenRow | None:
    row = await conn.fetchrow(
        "SELECT id, role, labs FROM tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        token_digest(token),
    )
    if row is None:
        return None
    return TokenRow(id=row["id"], role=row["role"], labs=tuple(row["labs"]))


async def token_label(conn: Executor, token_id: uuid.UUID) -> str | None:
    label: str | None = await conn.fetchval("SELECT label FROM tokens WHERE id = $1", token_id)
    return label


async def create_first_admin(conn: Conn) -> str | None:
    """An admin token if there is no admin yet (first start), else None. Two servers starting
    at once must not both mint one, hence the lock."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ledger.first_admin'))")
        if await any_admin(conn):
            return None
        token, _ = await create_token(conn, role=roles.ADMIN, label="first start")
        return token


async def any_admin(conn: Executor) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tokens WHERE role = $1 AND revoked_at IS NULL)", roles.ADMIN)
    )
