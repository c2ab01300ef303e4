"""Who may do what: roles, labs, and the decisions every endpoint asks for."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from ledger.errors import Forbidden, InvalidRequest

__all__ = ["READERS", "Principal", "require_lab", "require_role", "submission_lab", "visible_labs"]

READERS = ("lab_manager", "compliance_officer", "auditor", "admin")


class Principal(msgspec.Struct, frozen=True):
    token_id: uuid.UUID
    role: str
    labs: tuple[str, ...]


def require_role(principal: Principal, roles: Sequence[str]) -> None:
    if principal.role not in roles:
        raise Forbidden(f"this action needs one of the roles {', '.join(roles)}; you are {principal.role}")


def visible_labs(principal: Principal) -> tuple[str, ...] | None:
    """The labs whose data the principal may read; None means every lab."""
    return principal.labs if principal.role == "lab_manager" else None


def require_lab(principal: Principal, lab: str) -> None:
    labs = visible_labs(principal)
    if labs is not None and lab not in labs:
        raise Forbidden(f"you do not act for lab {lab!r}")


def submission_lab(principal: Principal, requested: str | None) -> str:
    """The lab a manifest is submitted for: named explicitly unless the caller has one lab."""
    require_role(principal, ("lab_manager", "admin"))
    if requested:
        require_lab(principal, requested)
        return requested
    if principal.role == "lab_manager" and len(principal.labs) == 1:
        return principal.labs[0]
    raise InvalidRequest("lab_required", "name the lab this manifest belongs to in the form field 'lab'")
