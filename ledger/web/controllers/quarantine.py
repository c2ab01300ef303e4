"""/ui/quarantine: the review queue (filters, facet counts, keyset pages both ways, the CSV
export of the same filter) and bulk dismissal, through ledger.services.quarantine like the
API's /quarantine. Everyone who reads the queue sees it; officers and admins act on it."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Template

from ledger.core import roles
from ledger.core.review import REASONS, STATUSES
from ledger.errors import InvalidRequest
from ledger.services import labs
from ledger.services import quarantine as service
from ledger.services.access import visible_labs
from ledger.services.limits import BULK_ITEMS_MAX
from ledger.web.form_text import check_form_text
from ledger.web.forms import Form
from ledger.web.guards import PageAccess
from ledger.web.nav import QUARANTINE
from ledger.web.pages import Page
from ledger.web.queue_filters import Filters, QueryText

__all__ = ["DECIDERS", "PAGE_SIZE", "QueuePages"]

# Who decides items: the API's actors (POST /quarantine/...).
DECIDERS = PageAccess(roles.ACTORS)
# Items per page of the queue.
PAGE_SIZE = 50
# What the queue is filtered by when nobody said (the bare /ui/quarantine).
_OPEN_QUEUE = f"{QUARANTINE.path}?status=open"
_EXPORT_PATH = "/quarantine/export.csv"


class BulkForm(msgspec.Struct, frozen=True):
    """The queue's bulk form: the ticked items, or every item the filter matches (``all``), and
    the step: ``confirm`` asks (the dialog, as a page of its own without scripts), ``dismiss``
    acts. The filter travels as ``filter.<name>``: ``reason`` is the dismissal's."""

    ids: list[str] | str = []
    all: str = ""
    step: str = ""
    reason: str = ""
    csrf_token: str = ""
    filter_status: str = msgspec.field(name="filter.status", default="")
    filter_reason: str = msgspec.field(name="filter.reason", default="")
    filter_rule: str = msgspec.field(name="filter.rule", default="")
    filter_field: str = msgspec.field(name="filter.field", default="")
    filter_lab: str = msgspec.field(name="filter.lab", default="")
    filter_grant_code: str = msgspec.field(name="filter.grant_code", default="")
    filter_task_id: str = msgspec.field(name="filter.task_id", default="")

    def id_list(self) -> list[str]:
        # One checkbox ticked arrives as a string, several as a list.
        return [self.ids] if isinstance(self.ids, str) else list(self.ids)

    def filters(self) -> Filters:
        # A filter dismisses open items only (ledger.services.quarantine.bulk).
        return Filters(
            status="open",
            reason=self.filter_reason.strip(),
            rule=self.filter_rule.strip(),
            field=self.filter_field.strip(),
            lab=self.filter_lab.strip(),
            grant_code=self.filter_grant_code.strip(),
            task_id=self.filter_task_id.strip(),
        )


def _options(counts: dict[str, int], known: list[str], selected: str) -> list[tuple[str, int | None]]:
    """A select's choices: every name known or counted, by name, with its count where the
    current filter has one, and the selected one even when nothing matches it."""
    names = sorted({*counts, *known, *([selected] if selected else [])})
    return [(name, counts.get(name)) for name in names]


class QueuePages(Controller):
    path = "/quarantine"
    include_in_schema = False
    guards = [QUARANTINE.access]

    @get("/")
    async def queue(
        self,
        page: NamedDependency[Page],
        status: QueryText = None,
        reason: QueryText = None,
        rule: QueryText = None,
        field: QueryText = None,
        lab: QueryText = None,
        grant_code: QueryText = None,
        task_id: QueryText = None,
        cursor: QueryText = None,
        before: QueryText = None,
    ) -> Response[Any]:
        if not page.request.url.query:
            return page.redirect(_OPEN_QUEUE)
        given = {"status": status, "reason": reason, "rule": rule, "field": field}
        given |= {"lab": lab, "grant_code": grant_code, "task_id": task_id}
        filters = Filters(**{name: (value or "").strip() for name, value in given.items()})
        return await self._queue(page, filters, after=cursor or None, before=before or None)

    async def _queue(self, page: Page, filters: Filters, *, after: str | None, before: str | None) -> Template:
        assert page.principal is not None
        ledger = page.ledger
        view: service.QueueView | None = None
        error: InvalidRequest | None = None
        try:
            view = await service.browse(
                ledger.db, ledger.policies, page.principal, filters.query(), limit=PAGE_SIZE, after=after, before=before
            )
        except InvalidRequest as exc:
            # A filter the service refuses: the form again, saying which, and no items.
            error = exc
        rules = view.choices.rules if view else {}
        fields = view.choices.fields if view else {}
        policy_fields = [f for policy in ledger.policies.all() for f in policy.field_names]
        may_decide = DECIDERS.admits(page.principal)
        matching = view.matching if view else 0
        return page.render(
            "quarantine/queue.html",
            title=QUARANTINE.title,
            status_code=422 if error else 200,
            filters=filters,
            view=view,
            error=error,
            statuses=sorted(STATUSES),
            reasons=sorted(REASONS),
            rule_options=_options(rules, [], filters.rule),
            field_options=_options(fields, policy_fields, filters.field),
            labs=await labs.list_visible(ledger.db, visible_labs(page.principal)),
            may_decide=may_decide,
            # Bulk dismissal acts on open items: offered on the open queue.
            bulk=may_decide and filters.status == "open" and matching > 0,
            bulk_max=BULK_ITEMS_MAX,
            all_count=min(matching, BULK_ITEMS_MAX),
            export_url=f"{_EXPORT_PATH}?{filters.api_params()}",
            next_url=view and view.next and f"{QUARANTINE.path}?{filters.params(cursor=view.next)}",
            previous_url=view and view.previous and f"{QUARANTINE.path}?{filters.params(before=view.previous)}",
        )

    @post("/bulk", guards=[DECIDERS], status_code=200)
    async def bulk(self, page: NamedDependency[Page], data: Form[BulkForm]) -> Template:
        assert page.principal is not None
        ledger = page.ledger
        check_form_text({"reason": data.reason, "ids": data.id_list()})
        ids = [i.strip() for i in data.id_list() if i.strip()]
        every = data.all == "true"
        if not every and not ids:
            raise InvalidRequest("nothing_selected", "tick the items to dismiss, or select all matching, first")
        filters = data.filters()
        if data.step == "confirm" or (data.step == "dismiss" and not data.reason.strip()):
            count = len(ids)
            if every:
                view = await service.browse(ledger.db, ledger.policies, page.principal, filters.query(), limit=1)
                count = min(view.matching, BULK_ITEMS_MAX)
            return page.render(
                "quarantine/bulk_confirm.html",
                title="Dismiss items",
                status_code=200 if data.step == "confirm" else 422,
                ids=[] if every else ids,
                every=every,
                count=count,
                filters=filters,
                back_url=f"{QUARANTINE.path}?{filters.params()}",
                reason_missing=data.step == "dismiss",
            )
        if data.step != "dismiss":
            raise InvalidRequest("invalid_step", "step must be confirm or dismiss")
        body = service.BulkBody(
            action="dismiss",
            ids=None if every else ids,
            filter=filters.bulk_filter() if every else None,
            reason=data.reason.strip(),
        )
        result = await service.bulk(
            ledger.db, ledger.settings, ledger.policies, page.principal, body, signing=ledger.signing
        )
        return page.render(
            "quarantine/bulk_result.html",
            title="Bulk dismissal",
            result=result,
            bulk_max=BULK_ITEMS_MAX,
            back_url=f"{QUARANTINE.path}?{filters.params()}",
        )
