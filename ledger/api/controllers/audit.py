"""/audit: the chain head, full verification, signing keys, checkpoints, proofs, export."""

from __future__ import annotations

import os
from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from ledger.api.state import AppState
from ledger.core.proofs import ConsistencyProof, EntryProof
from ledger.core.verify import VerifyReport
from ledger.db.audit import Head, get_head, verify_ledger
from ledger.db.checkpoints import StoredCheckpoint
from ledger.services import audit as service
from ledger.services.access import Principal, require_role

__all__ = ["AuditController"]

AUDIT_ROLES = ("auditor", "compliance_officer", "admin")
FromSize = Annotated[int, QueryParameter(name="from", ge=0)]
# Processes that verify a large ledger in parallel ranges.
VERIFY_WORKERS = min(4, os.cpu_count() or 1)


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get("/head", summary="The latest batch of the chain")
    async def head(self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]) -> Head:
        require_role(principal, AUDIT_ROLES)
        return await get_head(ledger.db)

    @get("/verify", summary="Recompute every record hash, batch root and chain link")
    async def verify(self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]) -> VerifyReport:
        require_role(principal, AUDIT_ROLES)
        async with ledger.db.acquire() as conn:
            return await verify_ledger(conn, database_url=ledger.database_url, workers=VERIFY_WORKERS)

    @get("/public-key", summary="Every checkpoint signing key, the current one first")
    async def public_keys(
        self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> list[service.PublicKey]:
        require_role(principal, AUDIT_ROLES)
        return await service.public_keys(ledger.db)

    @get("/checkpoints/latest", summary="The latest signed checkpoint (C2SP signed note in 'note')")
    async def latest_checkpoint(
        self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> StoredCheckpoint:
        require_role(principal, AUDIT_ROLES)
        return await service.latest_checkpoint(ledger.db)

    @get("/checkpoints", summary="Checkpoints with tree sizes in from..to")
    async def checkpoints(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        from_: FromSize = 0,
        to: FromQuery[int | None] = None,
        limit: FromQuery[int] = 100,
    ) -> list[StoredCheckpoint]:
        require_role(principal, AUDIT_ROLES)
        return await service.list_checkpoints(ledger.db, from_, to, limit)

    @post("/checkpoints", summary="Sign a checkpoint of the current head now (admin)", status_code=201)
    async def create_checkpoint(
        self, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> StoredCheckpoint:
        require_role(principal, ("admin",))
        return await service.create_checkpoint(ledger.db)

    @get("/proofs/entries/{entry_id:int}", summary="Inclusion proof of one ledger entry in a signed checkpoint")
    async def entry_proof(
        self, entry_id: FromPath[int], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> EntryProof:
        require_role(principal, AUDIT_ROLES)
        return await service.entry_proof(ledger.db, entry_id)

    @get("/proofs/consistency", summary="Consistency proof between two tree sizes")
    async def consistency(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        from_: Annotated[int, QueryParameter(name="from")],
        to: FromQuery[int | None] = None,
    ) -> ConsistencyProof:
        require_role(principal, AUDIT_ROLES)
        return await service.consistency_proof(ledger.db, from_, to)

    @get("/export", summary="JSON Lines bundle of headers, records, row outcomes and checkpoints")
    async def export(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        from_: FromSize = 0,
        to: FromQuery[int | None] = None,
    ) -> Stream:
        require_role(principal, AUDIT_ROLES)
        lines = await service.export_bundle(ledger.db, from_, to)
        return Stream(
            lines,
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="ledger-bundle.jsonl"'},
        )
