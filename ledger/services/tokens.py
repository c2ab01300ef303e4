"""Token administration, shared by the admin API and `ledger token`: what a token may be
granted (checked here once), creating, listing, revoking and rotating."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from ledger import audit_log
from ledger.config import TOKEN_DAYS_MAX
from ledger.core import roles
from ledger.db import tokens as tokens_db
from ledger.db.pool import Conn, Executor
from ledger.db.tokens import TokenInfo
from ledger.errors import Conflict, InvalidRequest, NotFound
from ledger.services.labs import require_known

__all__ = ["CreateBody", "CreatedToken", "TokenInfo", "check_grant", "create", "list_all", "revoke", "rotate"]

# A lab name as a token carries it: printable, no surrounding space, bounded.
_LAB_CHARS_MAX = 200


class CreateBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """POST /tokens. ``expires_in_days`` left out: the server's LEDGER_TOKEN_TTL_DAYS; null:
    never expires."""

    role: str
    labs: list[str] = msgspec.field(default_factory=list)
    label: str | None = None
    expires_in_days: int | msgspec.UnsetType | None = msgspec.UNSET

    def expiry(self, default_days: int | None) -> int | None:
        return default_days if isinstance(self.expires_in_days, msgspec.UnsetType) else self.expires_in_days


class CreatedToken(msgspec.Struct, frozen=True):
    """A token as it is made: the secret is shown this once and never again."""

    token: str
    info: TokenInfo


def check_grant(
    role: str, labs: Sequence[str], expires_in_days: int | None, label: str | None = None
) -> tuple[str, ...]:
    """The labs, checked against the role: a lab manager acts for at least one named lab; every
    other role acts for every lab and names none. InvalidRequest says what to change."""
    if label is not None and (len(label) > _LAB_CHARS_MAX or not label.isprintable()):
        raise InvalidRequest("invalid_label", f"a label is at most {_LAB_CHARS_MAX} printable characters")
    if role not in roles.ROLES:
        raise InvalidRequest("invalid_role", f"role must be one of {', '.join(roles.ROLES)}")
    for lab in labs:
        if not lab or lab != lab.strip() or len(lab) > _LAB_CHARS_MAX or not lab.isprintable():
            raise InvalidRequest(
                "invalid_lab",
                f"a lab is a non-empty name of printable characters without surrounding space, "
                f"at most {_LAB_CHARS_MAX} long",
            )
    if role == roles.LAB_MANAGER and not labs:
        raise InvalidRequest("lab_required", "a lab_manager token needs at least one lab")
    if role != roles.LAB_MANAGER and labs:
        raise InvalidRequest(
            "labs_not_allowed", f"{role} tokens act for every lab; only a lab_manager token names labs"
        )
    if expires_in_days is not None and not 1 <= expires_in_days <= TOKEN_DAYS_MAX:
        raise InvalidRequest("invalid_expiry", f"expires_in_days must be between 1 and {TOKEN_DAYS_MAX}")
    return tuple(dict.fromkeys(labs))


async def create(
    conn: Executor, *, role: str, labs: Sequence[str], label: str | None, expires_in_days: int | None
) -> CreatedToken:
    checked = check_grant(role, labs, expires_in_days, label)
    await require_known(conn, checked)
    token, row = await tokens_db.create_token(
        conn, role=role, labs=checked, label=label, expires_in_days=expires_in_days
    )
    info = await tokens_db.get_token(conn, row.id)
    assert info is not None
    _audit(audit_log.TOKEN_CREATED, info)
    return CreatedToken(token=token, info=info)


def _audit(action: str, info: TokenInfo, replaced: uuid.UUID | None = None) -> None:
    """The token an admin (or a command) made, revoked or rotated, never its secret; the actor is
    the request's principal, or the command's user."""
    target = audit_log.TargetUser(id=str(info.id), roles=[info.role], name=info.label)
    fields = audit_log.LedgerFields(
        labs=list(info.labs) or None, replaced_token_id=None if replaced is None else str(replaced)
    )
    audit_log.after_commit(audit_log.event(action, target=target, ledger=fields))


async def list_all(conn: Executor) -> list[TokenInfo]:
    return await tokens_db.list_tokens(conn)


def _token_id(raw: str | uuid.UUID) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound("not_found", "no such token") from None


async def revoke(conn: Executor, token_id: str | uuid.UUID) -> TokenInfo:
    info = await tokens_db.revoke_token(conn, _token_id(token_id))
    if info is None:
        raise NotFound("not_found", "no such token")
    _audit(audit_log.TOKEN_REVOKED, info)
    return info


async def rotate(conn: Conn, token_id: str | uuid.UUID) -> CreatedToken:
    """A new secret for the same role, labs and label (and lifetime); the old one is revoked."""
    old_id = _token_id(token_id)
    result = await tokens_db.rotate_token(conn, old_id)
    if result is None:
        raise NotFound("not_found", "no such token")
    token, info = result
    if not token:
        raise Conflict("token_revoked", "a revoked token cannot be rotated; create a new one")
    _audit(audit_log.TOKEN_ROTATED, info, replaced=old_id)
    return CreatedToken(token=token, info=info)
