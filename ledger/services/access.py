"""Who may do what: the role check the API's guards make, and the lab checks that need the record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from ledger.core import roles
from ledger.db import imports as imports_db
from ledger.db.pool import Executor
from ledger.db.tokens import find_token
from ledger.errors import Forbidden, InvalidRequest, NotFound

__all__ = [
    "Principal",
    "principal_of",
    "readable_import",
    "require_lab",
    "require_role",
    "submission_lab",
    "visible_labs",
]


class Principal(msgspec.Struct, frozen=True):
    token_id: uuid.UUID
    role: str
    labs: tuple[str, ...]


async def principal_of(conn: Executor, token: str) -> Principal | None:
    """Who a bearer token speaks for; None for an unknown or revoked token."""
    row = await find_token(conn, token)
    return None if row is None else Principal(token_id=row.id, role=row.role, labs=row.labs)


def require_role(principal: Principal, allowed: Sequence[str]) -> None:
    """Called by the API's guards (ledger.api.guards) before a request's parameters are read."""
    if principal.role not in allowed:
        raise Forbidden(f"this action needs one of the roles {', '.join(allowed)}; you are {principal.role}")


def visible_labs(principal: Principal) -> tuple[str, ...] | None:
    """The labs whose data the principal may read; None means every lab."""
    return principal.labs if principal.role == roles.LAB_MANAGER else None


def require_lab(principal: Principal, lab: str) -> None:
    labs = visible_labs(principal)
    if labs is not None and lab not in labs:
        raise Forbidden(f"you do not act for lab {lab!r}")


def submission_lab(principal: Principal, requested: str | None) -> str:
    """The lab a manifest is submitted for: named explicitly unless the caller has one lab."""
    if requested:
        require_lab(principal, requested)
        return requested
    if principal.role == roles.LAB_MANAGER and len(principal.labs) == 1:
        return principal.labs[0]
    raise InvalidRequest("lab_required", "name the lab this manifest belongs to in the form field 'lab'")


async def readable_import(conn: Executor, principal: Principal, task_id: str) -> imports_db.ImportRecord:
    """The import ``task_id`` names, if the principal may read it: 404 for an id that is not one,
    for no such import, and 403 for another lab's."""
    try:
        import_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound("not_found", f"no import {task_id!r}") from None
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        raise NotFound("not_found", f"no import {task_id!r}")
    require_lab(principal, record.lab)
    return record
