"""/audit: the chain head, full verification, signing keys, checkpoints, proofs, export."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import QueryParameter
from litestar.response import Stream

from ledger.api.guards import admins, auditors
from ledger.api.inputs import INT64_MAX, Count, OptionalCount, PathId
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.core.proofs import ConsistencyProof, EntryProof
from ledger.core.verify import VerifyReport
from ledger.services import audit_trail as service
from ledger.services import verification
from ledger.services.audit_trail import StoredCheckpoint

__all__ = ["AuditController"]

FromSize = Annotated[int, QueryParameter(name="from", ge=0, le=INT64_MAX)]


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]
    # Guards per handler: signing a checkpoint needs admin alone, and a refusal names the
    # roles of the handler asked for, not the wider set of the others.

    @get("/head", summary="The latest batch of the chain", guards=[auditors])
    async def head(self, ledger: NamedDependency[AppState]) -> verification.Head:
        return await verification.head(ledger.db)

    @get("/verify", summary="Recompute every record hash, batch root and chain link", guards=[auditors])
    async def verify(self, ledger: NamedDependency[AppState]) -> VerifyReport:
        return await verification.verify(ledger.db, ledger.database_url)

    @get("/public-key", summary="Every checkpoint signing key, the current one first", guards=[auditors])
    async def public_keys(self, ledger: NamedDependency[AppState]) -> list[service.PublicKey]:
        return await service.public_keys(ledger.db, ledger.signing)

    @get("/checkpoints/latest", summary="The latest signed checkpoint (C2SP signed note in 'note')", guards=[auditors])
    async def latest_checkpoint(self, ledger: NamedDependency[AppState]) -> StoredCheckpoint:
        return await service.latest_checkpoint(ledger.db, ledger.signing)

    @get("/checkpoints", summary="Checkpoints with tree sizes in from..to", guards=[auditors], opt=openapi_opt((422,)))
    async def checkpoints(
        self,
        ledger: NamedDependency[AppState],
        from_: FromSize = 0,
        to: OptionalCount = None,
        limit: Count = 100,
    ) -> list[StoredCheckpoint]:
        return await service.list_checkpoints(ledger.db, from_, to, limit)

    @post(
        "/checkpoints",
        summary="Sign a checkpoint of the current head now (admin)",
        status_code=201,
        guards=[admins],
        responses={
            200: ResponseSpec(
                StoredCheckpoint, description="The latest checkpoint already states this head with this key: that one"
            )
        },
    )
    async def create_checkpoint(self, ledger: NamedDependency[AppState]) -> Response[StoredCheckpoint]:
        checkpoint, created = await service.request_checkpoint(ledger.db, ledger.signing)
        return Response(checkpoint, status_code=201 if created else 200)

    @get("/batches/{seq:int}", summary="One batch: header, chain hash, entry ids and types", guards=[auditors])
    async def batch(self, seq: PathId, ledger: NamedDependency[AppState]) -> service.BatchListing:
        return await service.batch_listing(ledger.db, seq)

    @get(
        "/proofs/entries/{entry_id:int}",
        summary="Inclusion proof of one ledger entry in a signed checkpoint",
        guards=[auditors],
    )
    async def entry_proof(self, entry_id: PathId, ledger: NamedDependency[AppState]) -> EntryProof:
        return await service.entry_proof(ledger.db, ledger.signing, entry_id)

    @get(
        "/proofs/consistency",
        summary="Consistency proof between two tree sizes",
        guards=[auditors],
        opt=openapi_opt((422,)),
    )
    async def consistency(
        self,
        ledger: NamedDependency[AppState],
        from_: FromSize,
        to: OptionalCount = None,
    ) -> ConsistencyProof:
        return await service.consistency_proof(ledger.db, ledger.signing, from_, to)

    @get(
        "/export",
        summary="JSON Lines bundle of headers, records, row outcomes and checkpoints",
        guards=[auditors],
        media_type="application/x-ndjson",
        opt=openapi_opt((422,)),
    )
    async def export(
        self,
        ledger: NamedDependency[AppState],
        from_: FromSize = 0,
        to: OptionalCount = None,
    ) -> Stream:
        lines = await service.export_bundle(ledger.db, ledger.signing, from_, to)
        return Stream(
            lines,
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="ledger-bundle.jsonl"'},
        )
