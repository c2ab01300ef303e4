"""/audit: the chain head and full verification."""

from __future__ import annotations

from litestar import Controller, get

from ledger.api.state import AppState
from ledger.core.verify import VerifyReport
from ledger.db.audit import Head, get_head, verify_ledger
from ledger.services.access import Principal, require_role

__all__ = ["AuditController"]

AUDIT_ROLES = ("auditor", "compliance_officer", "admin")


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get("/head", summary="The latest batch of the chain")
    async def head(self, ledger: AppState, principal: Principal) -> Head:
        require_role(principal, AUDIT_ROLES)
        return await get_head(ledger.db)

    @get("/verify", summary="Recompute every record hash, batch root and chain link")
    async def verify(self, ledger: AppState, principal: Principal) -> VerifyReport:
        require_role(principal, AUDIT_ROLES)
        async with ledger.db.acquire() as conn:
            return await verify_ledger(conn)
