"""/imports: submit a manifest, follow it, read its rows, its error report, what became of every
row (accounting) and its signed receipt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from ledger.api.guards import readers, submitters
from ledger.api.inputs import Count, PathText, QueryText, check_cursor
from ledger.api.state import AppState
from ledger.core.proofs import ReceiptProof
from ledger.services import audit_trail, quarantine
from ledger.services import imports as service
from ledger.services.access import Principal

__all__ = ["ImportsController"]


class ImportsController(Controller):
    path = "/imports"
    tags = ["imports"]
    guards = [readers]

    @post(
        "/",
        summary="Submit a manifest (multipart field 'file'; optional 'policy', 'lab', 'dry_run')",
        request_max_body_size=None,
        status_code=202,
        guards=[submitters],
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key")] = None,
    ) -> Response[dict[str, Any]]:
        created, body = await service.submit(
            ledger.db,
            ledger.settings,
            ledger.policies,
            principal,
            body=request.stream(),
            content_type=request.headers.get("content-type", ""),
            idempotency_key=idempotency_key,
        )
        return Response(body, status_code=202 if created else 200)

    @get("/{task_id:str}", summary="Status, counts and batches of one import")
    async def status(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        return await service.get_status(ledger.db, principal, task_id)

    @get("/{task_id:str}/rows", summary="The outcome of every row, paginated")
    async def rows(
        self,
        task_id: PathText,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        outcome: QueryText = None,
        limit: Count = 100,
        cursor: QueryText = None,
    ) -> service.RowsPage:
        check_cursor("cursor", cursor)
        return await service.list_rows(ledger.db, principal, task_id, outcome=outcome, limit=limit, cursor=cursor)

    @get("/{task_id:str}/errors", summary="CSV of every broken rule of every quarantined row")
    async def errors(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> Stream:
        filename, chunks = await service.error_report(ledger.db, principal, task_id)
        return Stream(
            chunks,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @delete("/{task_id:str}", summary="Cancel a queued or running import", status_code=200, guards=[submitters])
    async def cancel(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        return await service.cancel(ledger.db, principal, task_id)

    @get("/{task_id:str}/events", summary="Server-Sent Events: progress at least once a second, then the outcome")
    async def events(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> ServerSentEvent:
        stream = await service.events(ledger.db, principal, task_id)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            async for event, progress in stream:
                yield ServerSentEventMessage(data=msgspec.json.encode(progress).decode(), event=event)

        return ServerSentEvent(messages())

    @get("/{task_id:str}/accounting", summary="Every row of the manifest by final disposition")
    async def accounting(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> quarantine.Accounting:
        return await quarantine.accounting(ledger.db, principal, task_id)

    @get("/{task_id:str}/receipt", summary="The import's receipt with its inclusion in a signed checkpoint")
    async def receipt(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> ReceiptProof:
        return await audit_trail.receipt_proof(ledger.db, ledger.signing, principal, task_id)
