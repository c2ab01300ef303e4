"""/quarantine: the review queue for compliance officers."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody
from litestar.response import Stream

from ledger.api.guards import actors, readers
from ledger.api.inputs import Count, PathText, QueryText, check_cursor, check_item_id, check_item_ids, json_body
from ledger.api.openapi import openapi_opt
from ledger.api.state import AppState
from ledger.services import quarantine as service
from ledger.services.access import Principal

__all__ = ["QuarantineController"]


def _filters(
    status: QueryText = None,
    reason: QueryText = None,
    rule: QueryText = None,
    field: QueryText = None,
    lab: QueryText = None,
    grant_code: QueryText = None,
    task_id: QueryText = None,
) -> service.Query:
    """The filters the queue and its export share."""
    return service.Query(
        status=status, reason=reason, rule=rule, field=field, lab=lab, grant_code=grant_code, task_id=task_id
    )


class QuarantineController(Controller):
    path = "/quarantine"
    tags = ["quarantine"]
    dependencies = {"filters": Provide(_filters, sync_to_thread=False)}
    guards = [readers]

    @get("/", summary="Quarantined rows, newest first, with facets per rule and field", opt=openapi_opt((422,)))
    async def list(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        filters: NamedDependency[service.Query],
        limit: Count = 50,
        cursor: QueryText = None,
    ) -> service.Page:
        check_cursor("cursor", cursor)
        return await service.list_items(ledger.db, ledger.policies, principal, filters, limit=limit, cursor=cursor)

    @get(
        "/export.csv",
        summary="The filtered queue as CSV, formula cells neutralised",
        media_type="text/csv",
        opt=openapi_opt((422,)),
    )
    async def export(
        self,
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
        filters: NamedDependency[service.Query],
    ) -> Stream:
        filename, chunks = await service.export_csv(ledger.db, ledger.policies, principal, filters)
        return Stream(
            chunks,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    @post(
        "/bulk",
        summary="Dismiss or requeue many items (ids or a filter); per-item results",
        status_code=200,
        guards=[actors],
        before_request=json_body,
    )
    async def bulk(
        self, data: JSONBody[service.BulkBody], ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.BulkResult:
        check_item_ids(data.ids)
        return await service.bulk(ledger.db, ledger.settings, ledger.policies, principal, data, signing=ledger.signing)

    @get("/{item_id:str}", summary="One item: original cells, broken rules, source import, history")
    async def show(
        self, item_id: PathText, ledger: NamedDependency[AppState], principal: NamedDependency[Principal]
    ) -> service.ItemDetail:
        check_item_id("item_id", item_id)
        return await service.get_item(ledger.db, ledger.policies, principal, item_id)

    @post(
        "/{item_id:str}/resubmit",
        summary="Correct the row and commit it to the ledger",
        status_code=200,
        guards=[actors],
        before_request=json_body,
        opt=openapi_opt((409,)),
    )
    async def resubmit(
        self,
        item_id: PathText,
        data: JSONBody[service.ResubmitBody],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> service.ItemResult:
        check_item_id("item_id", item_id)
        return await service.resubmit(
            ledger.db, ledger.settings, ledger.policies, principal, item_id, data, signing=ledger.signing
        )

    @post(
        "/{item_id:str}/transfer",
        summary="Move the row's asset key from the lab that holds it to the row's lab, and commit the row",
        status_code=200,
        guards=[actors],
        before_request=json_body,
        opt=openapi_opt((409,)),
    )
    async def transfer(
        self,
        item_id: PathText,
        data: JSONBody[service.TransferBody],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> service.ItemResult:
        check_item_id("item_id", item_id)
        return await service.transfer(
            ledger.db, ledger.settings, ledger.policies, principal, item_id, data, signing=ledger.signing
        )

    @post(
        "/{item_id:str}/dismiss",
        summary="Dismiss the row with a reason",
        status_code=200,
        guards=[actors],
        before_request=json_body,
        opt=openapi_opt((409,)),
    )
    async def dismiss(
        self,
        item_id: PathText,
        data: JSONBody[service.DismissBody],
        ledger: NamedDependency[AppState],
        principal: NamedDependency[Principal],
    ) -> service.ItemResult:
        check_item_id("item_id", item_id)
        return await service.dismiss(ledger.db, ledger.settings, principal, item_id, data, signing=ledger.signing)
