"""/imports: submit a manifest, follow it, read its rows and its error report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from ledger.api.state import AppState
from ledger.services import imports as service
from ledger.services.access import READERS, Principal, require_role

__all__ = ["ImportsController"]


class ImportsController(Controller):
    path = "/imports"
    tags = ["imports"]

    @post(
        "/",
        summary="Submit a manifest (multipart field 'file'; optional 'policy', 'lab', 'dry_run')",
        request_max_body_size=None,
        status_code=202,
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
        self, task_id: FromPath[str], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        require_role(principal, READERS)
        return await service.get_status(ledger.db, principal, task_id)

    @get("/{task_id:str}/rows", summary="The outcome of every row, paginated")
    async def rows(
        self,
        task_id: FromPath[str],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        outcome: FromQuery[str | None] = None,
        limit: FromQuery[int] = 100,
        cursor: FromQuery[str | None] = None,
    ) -> service.RowsPage:
        require_role(principal, READERS)
        return await service.list_rows(ledger.db, principal, task_id, outcome=outcome, limit=limit, cursor=cursor)

    @get("/{task_id:str}/errors", summary="CSV of every broken rule of every quarantined row")
    async def errors(
        self, task_id: FromPath[str], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> Stream:
        require_role(principal, READERS)
        filename, chunks = await service.error_report(ledger.db, principal, task_id)
        return Stream(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @delete("/{task_id:str}", summary="Cancel a queued or running import", status_code=200)
    async def cancel(
        self, task_id: FromPath[str], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        return await service.cancel(ledger.db, principal, task_id)

    @get("/{task_id:str}/events", summary="Server-Sent Events: progress at least once a second, then the outcome")
    async def events(
        self, task_id: FromPath[str], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> ServerSentEvent:
        require_role(principal, READERS)
        stream = await service.events(ledger.db, principal, task_id)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            async for event, progress in stream:
                yield ServerSentEventMessage(data=msgspec.json.encode(progress).decode(), event=event)

        return ServerSentEvent(messages())
