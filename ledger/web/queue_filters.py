"""The quarantine queue's filters as the pages carry them: in the address, under the API's own
parameter names (GET /quarantine), so that a filtered page can be shared, the back button
undoes a filter, and the same query string asks the API (its CSV export) for the same items.

``status`` is always in a page's address, empty for "any status": the bare /ui/quarantine is
the open queue (ledger.web.controllers.quarantine redirects it), which is what an officer
comes for, while the API's /quarantine without ``status`` means every status.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

import msgspec
from litestar.params import QueryParameter

from ledger.services import quarantine as service

__all__ = ["FILTER_NAMES", "Filters", "QueryText"]

# The API's parameter names, in the order the form shows them.
FILTER_NAMES = ("status", "reason", "rule", "field", "lab", "grant_code", "task_id")

# Query text the pages accept: what the API's parameters accept (no control characters but
# tab; ledger.api.inputs), so that nothing reaches the database that the API would refuse; and
# no longer than any status, reason, rule, field, lab, grant code, task id or cursor.
_TEXT_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]*$"
QueryText = Annotated[str | None, QueryParameter(pattern=_TEXT_PATTERN, max_length=500)]


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    status: str = ""
    reason: str = ""
    rule: str = ""
    field: str = ""
    lab: str = ""
    grant_code: str = ""
    task_id: str = ""

    def values(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FILTER_NAMES}

    def query(self) -> service.Query:
        """The service's query: an empty field filters nothing."""
        return service.Query(**{name: value or None for name, value in self.values().items()})

    def bulk_filter(self) -> service.BulkFilter:
        return service.BulkFilter(**{name: value or None for name, value in self.values().items()})

    def params(self, **extra: str) -> str:
        """This page's query string (with ``extra``, e.g. a cursor): ``status`` always, the
        other filters when set."""
        pairs = [(n, v) for n, v in self.values().items() if v or n == "status"]
        pairs += [(n, v) for n, v in extra.items() if v]
        return urlencode(pairs)

    def api_params(self) -> str:
        """The API's query string for the same items (it takes no empty filter)."""
        return urlencode([(n, v) for n, v in self.values().items() if v])

    @property
    def active(self) -> bool:
        return any(v for n, v in self.values().items() if n != "status")
