"""Who may do what: the role check the API's guards make, and the lab checks that need the record."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from ledger import audit_log
from ledger.core import roles
from ledger.core.policy.rules import echo
from ledger.db import imports as imports_db
from ledger.db.pool import Executor
from ledger.db.tokens import find_token
from ledger.errors import Forbidden, InvalidRequest, NotFound, Unauthorized

__all__ = [
    "Principal",
    "denied",
    "principal_of",
    "readable_import",
    "require_lab",
    "require_role",
    "sees_lab",
    "submission_lab",
    "visible_labs",
]


class Principal(msgspec.Struct, frozen=True):
    token_id: uuid.UUID
    role: str
    labs: tuple[str, ...]
    label: str | None = None


async def principal_of(conn: Executor, token: str) -> Principal:
    """Who a bearer token speaks for (one statement, which also records the token's use).
    Unauthorized ``token_expired`` for an expired token, ``unauthorized`` for an unknown or
    revoked one (the two are not told apart: a revoked token's holder learns nothing more)."""
    found = await find_token(conn, token)
    if found is None:
        raise Unauthorized("unauthorized", "the token is not valid (unknown or revoked)")
    if found.expired:
        raise Unauthorized("token_expired", "the token has expired; ask an admin for a new one")
    row = found.row
    return Principal(token_id=row.id, role=row.role, labs=row.labs, label=row.label)


def denied(principal: Principal | None, reason: str, code: str = "forbidden") -> None:
    """An access-denied line in the audit log: every refusal for who the caller is, or for a lab
    it does not act for (which some answers disguise as 404), whatever page or route refused."""
    audit_log.emit(
        audit_log.event(audit_log.ACCESS_DENIED, outcome="failure", actor=principal, reason=reason, error_code=code)
    )


def require_role(principal: Principal, allowed: Sequence[str]) -> None:
    """Called by the API's guards (ledger.api.guards) before a request's parameters are read."""
    if principal.role not in allowed:
        refusal = Forbidden(f"this action needs one of the roles {', '.join(allowed)}; you are {principal.role}")
        denied(principal, refusal.message)
        raise refusal


def visible_labs(principal: Principal) -> tuple[str, ...] | None:
    """The labs whose data the principal may read; None means every lab."""
    return principal.labs if principal.role == roles.LAB_MANAGER else None


def sees_lab(principal: Principal, lab: str) -> bool:
    labs = visible_labs(principal)
    return labs is None or lab in labs


def require_lab(principal: Principal, lab: str) -> None:
    """For a lab the caller names itself (a submission's): 403, which reveals nothing it did not
    send. Records found by id use sees_lab and answer like an unknown id instead."""
    if not sees_lab(principal, lab):
        # The audit line does not quote the lab: it is whatever the client sent.
        denied(principal, "the request names a lab the caller does not act for")
        raise Forbidden(f"you do not act for lab {echo(lab)}")


def submission_lab(principal: Principal, requested: str | None) -> str:
    """The lab a manifest is submitted for: named explicitly unless the caller has one lab."""
    if requested:
        require_lab(principal, requested)
        return requested
    if principal.role == roles.LAB_MANAGER and len(principal.labs) == 1:
        return principal.labs[0]
    raise InvalidRequest("lab_required", "name the lab this manifest belongs to in the form field 'lab'")


async def readable_import(conn: Executor, principal: Principal, task_id: str) -> imports_db.ImportRecord:
    """The import ``task_id`` names, if the principal may read it. An id that is not one, no
    such import and another lab's import all answer the same 404: nothing tells them apart."""
    missing = NotFound("not_found", f"no import {echo(task_id)}")
    try:
        import_id = uuid.UUID(task_id)
    except ValueError:
        raise missing from None
    record = await imports_db.get_import(conn, import_id)
    if record is None:
        raise missing
    if not sees_lab(principal, record.lab):
        denied(principal, "the import belongs to a lab the caller does not act for", "other_lab")
        raise missing
    return record
