"""/imports: submit a manifest, follow it, read its rows, its error report, what became of every
row (accounting) and its signed receipt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Encoding, OpenAPIFormat, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage, Stream

from ledger.api.guards import readers, submitters
from ledger.api.inputs import TEXT_PATTERN, Count, PathText, QueryText, check_cursor
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.core.proofs import ReceiptProof
from ledger.services import audit_trail, import_list, quarantine
from ledger.services import imports as service
from ledger.services.access import Principal
from ledger.services.limits import IDEMPOTENCY_KEY_MAX

__all__ = ["ImportsController"]


# What ledger.services.imports reads as a yes or a no, spelt without regex flags (the schema's
# regexes are ECMA-262's).
_FLAG_PATTERN = "^\\s*([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|[Oo][Nn]|[Oo][Ff][Ff]|1|0)?\\s*$"


def _text(description: str) -> Schema:
    return Schema(type=OpenAPIType.STRING, pattern=TEXT_PATTERN, description=description)


# The handler streams the form itself (ledger.ingest.spool), so Litestar cannot see its fields:
# documented here, so that clients, and a fuzzer, can build a submission from the schema.
UPLOAD_FORM = RequestBody(
    required=True,
    description="A multipart form: the manifest in 'file' and the options of its import. Text fields "
    "are UTF-8 without control characters.",
    content={
        "multipart/form-data": OpenAPIMediaType(
            schema=Schema(
                type=OpenAPIType.OBJECT,
                required=["file"],
                properties={
                    "file": Schema(
                        type=OpenAPIType.STRING,
                        format=OpenAPIFormat.BINARY,
                        description="The manifest: CSV or TSV, XLSX or JSON Lines, told apart by content, "
                        "never by name.",
                    ),
                    "policy": _text("The policy to validate against (GET /policies); default lab-inventory."),
                    "lab": _text("The lab the manifest belongs to; needed unless the token acts for one lab."),
                    "dry_run": Schema(
                        type=OpenAPIType.STRING,
                        pattern=_FLAG_PATTERN,
                        description="Validate and report without writing to the ledger: true, 1, yes or on; "
                        "false, 0, no, off or empty (the default), in any case.",
                    ),
                    "encoding": _text("A Python codec name, instead of detecting the text's encoding."),
                    "sheet": _text("The XLSX worksheet to read, instead of the first."),
                },
            ),
            encoding={"file": Encoding(content_type="application/octet-stream")},
        )
    },
)


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
        responses={200: ResponseSpec(service.Accepted, description="This file was submitted before: the same answer")},
        opt=openapi_opt((403, 409, 413, 422, 429, 507), request_body=UPLOAD_FORM),
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)
        ] = None,
    ) -> Response[service.Accepted]:
        # Held before the body is read, so an upload past the token's cap costs no transfer.
        with ledger.uploads.hold(principal.token_id):
            created, body = await service.submit(
                ledger.db,
                ledger.settings,
                ledger.policies,
                principal,
                body=request.stream(),
                content_type=request.headers.get("content-type", ""),
                idempotency_key=idempotency_key,
            )
        return Response(msgspec.convert(body, service.Accepted), status_code=202 if created else 200)

    @get(
        "/",
        summary="The imports the token may read (a lab manager's labs' only), newest first, a page at a time",
        description="Filters: `lab`, `status`. Pages: `limit` (1 to 500, default 50) and `cursor`, the `next` of "
        "the previous page (null on the last). A lab the token does not act for lists nothing.",
        opt=openapi_opt((422,)),
    )
    async def list_imports(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        lab: QueryText = None,
        status: QueryText = None,
        limit: Count = 50,
        cursor: QueryText = None,
    ) -> import_list.ImportsPage:
        check_cursor("cursor", cursor)
        return await import_list.list_imports(ledger.db, principal, lab=lab, status=status, limit=limit, cursor=cursor)

    @get("/{task_id:str}", summary="Status, counts and batches of one import")
    async def status(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        return await service.get_status(ledger.db, principal, task_id)

    @get("/{task_id:str}/rows", summary="The outcome of every row, paginated", opt=openapi_opt((422,)))
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

    @get("/{task_id:str}/errors", summary="CSV of every broken rule of every quarantined row", media_type="text/csv")
    async def errors(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> Stream:
        filename, chunks = await service.error_report(ledger.db, principal, task_id)
        return Stream(
            chunks,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @delete(
        "/{task_id:str}",
        summary="Cancel a queued or running import",
        status_code=200,
        guards=[submitters],
        opt=openapi_opt((409,)),
    )
    async def cancel(
        self, task_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ImportStatus:
        return await service.cancel(ledger.db, principal, task_id)

    @get(
        "/{task_id:str}/events",
        summary="Server-Sent Events: progress at least once a second, then the outcome",
        media_type="text/event-stream",
    )
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
