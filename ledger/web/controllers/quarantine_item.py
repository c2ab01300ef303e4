"""/ui/quarantine/{task_id}:{row}: one quarantined row as a form, a field per policy field with
its broken rules beside it, and the decisions on it (resubmit, transfer, dismiss) through
ledger.services.quarantine like the API's /quarantine/{id}/...; its history of decisions.

The form sends every cell; what is sent as a correction is the cells that differ from the
original row, so that the review entry on the ledger records what the officer changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from ledger.core.policy.registry import UnknownPolicy
from ledger.errors import Conflict, InvalidRequest, ServiceError, Unavailable
from ledger.services import quarantine as service
from ledger.web.controllers.quarantine import DECIDERS
from ledger.web.form_text import check_form_text
from ledger.web.forms import Form
from ledger.web.nav import QUARANTINE
from ledger.web.pages import Page
from ledger.web.queue_filters import QueryText

__all__ = ["ItemPages"]

# A cell's input is named after its policy field behind this prefix: a policy may have a field
# called ``note`` or ``csrf_token``.
VALUE_PREFIX = "value."
# What a decision on the page failed with: the page again, with this status and the message.
_REFUSALS = (InvalidRequest, Conflict, Unavailable)


class Cell(msgspec.Struct, frozen=True):
    """One field of the row as the form shows it."""

    name: str
    value: str
    errors: list[dict[str, str]]


class DismissForm(msgspec.Struct, frozen=True):
    reason: str = ""
    csrf_token: str = ""


def _input_value(cell: str) -> str:
    # A browser drops line breaks from a text input's value: a cell holding one comes back
    # without it, which is no correction.
    return cell.replace("\r", "").replace("\n", "")


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name, "")
    return value if isinstance(value, str) else (value[-1] if value else "")


def _submitted(form: Mapping[str, Any]) -> dict[str, str]:
    return {k.removeprefix(VALUE_PREFIX): _text(form, k) for k in form if k.startswith(VALUE_PREFIX)}


def _corrections(detail: service.ItemDetail, submitted: dict[str, str]) -> dict[str, str]:
    """The cells that differ from the original row (a field the row lacked counts when filled)."""
    return {name: value for name, value in submitted.items() if value != _input_value(detail.fields.get(name, ""))}


class ItemPages(Controller):
    path = "/quarantine"
    include_in_schema = False
    guards = [QUARANTINE.access]

    def _field_names(self, page: Page, detail: service.ItemDetail) -> list[str]:
        """The policy's fields, in its order; the row's own names after them if its header held
        more (or the policy is no longer loaded)."""
        try:
            names = list(page.ledger.policies.get(detail.source.policy.name).field_names)
        except UnknownPolicy:
            names = []
        return names + [n for n in detail.fields if n not in names]

    def _render(
        self,
        page: Page,
        detail: service.ItemDetail,
        *,
        status_code: int = 200,
        submitted: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
        refusal: ServiceError | None = None,
        result: service.ItemResult | None = None,
        decided: str | None = None,
        confirm_dismiss: bool = False,
        note: str = "",
        reason: str = "",
    ) -> Template:
        """The item's page: its cells (as submitted, when a decision was refused), each with the
        rules it breaks (``errors``: those of the refused correction, else the import's)."""
        shown = detail.errors if errors is None else errors
        names = self._field_names(page, detail)
        cells = [
            Cell(
                name=name,
                value=(submitted or {}).get(name, _input_value(detail.fields.get(name, ""))),
                errors=[e for e in shown if e.get("field") == name],
            )
            for name in names
        ]
        open_item = detail.status == "open"
        return page.render(
            "quarantine/item.html",
            title=f"Row {detail.row} of {detail.source.filename or detail.task_id}",
            status_code=status_code,
            item=detail,
            cells=cells,
            row_errors=[e for e in shown if e.get("field") not in names],
            still_invalid=errors is not None,
            refusal=refusal,
            result=result,
            decided=decided,
            may_decide=DECIDERS.admits(page.principal) and open_item,
            may_transfer=open_item and detail.reason == "other_lab",
            confirm_dismiss=confirm_dismiss and open_item,
            # A refusal that a second try with a box ticked answers.
            offer_supersede=detail.reason == "conflict" or (refusal is not None and refusal.code == "revised_since"),
            offer_current_policy=refusal is not None and refusal.code == "policy_version_unavailable",
            note=note,
            reason=reason,
            item_path=f"{QUARANTINE.path}/{detail.id}",
        )

    async def _detail(self, page: Page, item_id: str) -> service.ItemDetail:
        assert page.principal is not None
        ledger = page.ledger
        return await service.get_item(ledger.db, ledger.policies, page.principal, item_id)

    @get("/{item_id:str}")
    async def show(self, page: NamedDependency[Page], item_id: FromPath[str], confirm: QueryText = None) -> Template:
        return self._render(page, await self._detail(page, item_id), confirm_dismiss=confirm == "dismiss")

    @post("/{item_id:str}/resubmit", guards=[DECIDERS], status_code=200)
    async def resubmit(
        self, page: NamedDependency[Page], item_id: FromPath[str], data: Form[dict[str, Any]]
    ) -> Template:
        return await self._correct(page, item_id, data, transfer=False)

    @post("/{item_id:str}/transfer", guards=[DECIDERS], status_code=200)
    async def transfer(
        self, page: NamedDependency[Page], item_id: FromPath[str], data: Form[dict[str, Any]]
    ) -> Template:
        return await self._correct(page, item_id, data, transfer=True)

    async def _correct(self, page: Page, item_id: str, form: dict[str, Any], *, transfer: bool) -> Template:
        assert page.principal is not None
        ledger = page.ledger
        check_form_text(form)
        detail = await self._detail(page, item_id)
        submitted = _submitted(form)
        values = _corrections(detail, submitted)
        note = _text(form, "note").strip()
        policy = "current" if _text(form, "policy") == "current" else None
        try:
            if transfer:
                result = await service.transfer(
                    ledger.db,
                    ledger.settings,
                    ledger.policies,
                    page.principal,
                    item_id,
                    service.TransferBody(note=note, values=values, policy=policy),
                    signing=ledger.signing,
                )
            else:
                result = await service.resubmit(
                    ledger.db,
                    ledger.settings,
                    ledger.policies,
                    page.principal,
                    item_id,
                    service.ResubmitBody(
                        values=values,
                        note=note or None,
                        policy=policy,
                        supersede=_text(form, "supersede") == "true",
                    ),
                    signing=ledger.signing,
                )
        except _REFUSALS as exc:
            # Nothing changed: the row as the officer left it, with what to change.
            still = exc.code == "still_invalid"
            return self._render(
                page,
                await self._detail(page, item_id) if isinstance(exc, Conflict) else detail,
                status_code=exc.status,
                submitted=submitted,
                errors=list(exc.extra.get("errors") or []) if still else None,
                refusal=exc,
                note=note,
            )
        return self._render(
            page, await self._detail(page, item_id), result=result, decided="transfer" if transfer else "resubmit"
        )

    @post("/{item_id:str}/dismiss", guards=[DECIDERS], status_code=200)
    async def dismiss(self, page: NamedDependency[Page], item_id: FromPath[str], data: Form[DismissForm]) -> Template:
        assert page.principal is not None
        ledger = page.ledger
        check_form_text({"reason": data.reason})
        try:
            result = await service.dismiss(
                ledger.db,
                ledger.settings,
                page.principal,
                item_id,
                service.DismissBody(reason=data.reason.strip()),
                signing=ledger.signing,
            )
        except _REFUSALS as exc:
            detail = await self._detail(page, item_id)
            return self._render(
                page,
                detail,
                status_code=exc.status,
                refusal=exc,
                # A missing reason: the dialog again, to give one.
                confirm_dismiss=exc.code == "reason_required",
                reason=data.reason,
            )
        return self._render(page, await self._detail(page, item_id), result=result, decided="dismiss")
