"""Listing imports: those of the caller's labs (every lab for the roles that act for all),
newest first, with keyset pages, for GET /imports and the pages' /ui/imports."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from ledger.db import import_list as list_db
from ledger.db import import_statuses as statuses
from ledger.db.cursors import decode_cursor, encode_cursor, invalid_cursor
from ledger.db.import_list import ImportSummary
from ledger.db.pool import Executor
from ledger.errors import InvalidRequest
from ledger.services.access import Principal, visible_labs
from ledger.services.limits import IMPORTS_PAGE_MAX

__all__ = ["ImportSummary", "ImportsPage", "list_imports"]


class ImportsPage(msgspec.Struct, frozen=True):
    items: list[ImportSummary]
    # The cursor of the next page (send it back as ``cursor``), or None on the last one.
    next: str | None


def _after(cursor: str) -> tuple[datetime, uuid.UUID]:
    created, task_id = decode_cursor(cursor, tuple[str, str])
    try:
        return datetime.fromisoformat(created), uuid.UUID(task_id)
    except ValueError:
        raise invalid_cursor() from None


async def list_imports(
    conn: Executor,
    principal: Principal,
    *,
    lab: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> ImportsPage:
    """A page of the imports ``principal`` may read. A ``lab`` it does not see lists nothing,
    as for a lab with no imports (nothing tells the two apart)."""
    if not 1 <= limit <= IMPORTS_PAGE_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {IMPORTS_PAGE_MAX}")
    if status is not None and status not in statuses.STATUSES:
        raise InvalidRequest("invalid_status", f"status must be one of {', '.join(statuses.STATUSES)}")
    labs = visible_labs(principal)
    if lab is not None:
        labs = (lab,) if labs is None or lab in labs else ()
    before = _after(cursor) if cursor else None
    items = await list_db.list_imports(conn, labs=labs, status=status, before=before, limit=limit)
    last = items[-1] if len(items) == limit else None
    return ImportsPage(
        items=items, next=None if last is None else encode_cursor([last.created_at.isoformat(), last.task_id])
    )
