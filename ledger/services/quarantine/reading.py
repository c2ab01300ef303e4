"""Reading the queue: item ids, filters and cursors, the list, one item with its history,
a manifest's accounting and the CSV export."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ledger.core.policy import ManifestRefused, normalise_header
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.core.policy.rules import echo
from ledger.core.review import REASONS, STATUSES, PolicyRef, parse_review
from ledger.db import quarantine as qdb
from ledger.db.cursors import decode_cursor, encode_cursor, invalid_cursor
from ledger.db.quarantine import ItemFilter, ItemKey, ItemRow
from ledger.errors import InvalidRequest, NotFound
from ledger.ingest.errors_csv import neutralise_cell
from ledger.services.access import Principal, denied, readable_import, sees_lab, visible_labs
from ledger.services.limits import QUARANTINE_PAGE_MAX
from ledger.services.quarantine.schemas import (
    Accounting,
    Facets,
    HistoryEntry,
    ImportRef,
    ItemDetail,
    ItemSummary,
    Page,
    Query,
    QueueView,
)

__all__ = [
    "PAGE_LIMIT_MAX",
    "accounting",
    "browse",
    "export_csv",
    "filter_for",
    "get_item",
    "item_id",
    "list_items",
    "parse_item_id",
    "readable_item",
    "summary",
]

PAGE_LIMIT_MAX = QUARANTINE_PAGE_MAX
# Rows are numbered in a BIGINT: an id past it names no item (and must not reach the database).
_ROW_MAX = 2**63 - 1
_EXPORT_COLUMNS = ["id", "task_id", "row", "lab", "filename", "status", "reason", "quarantined_at", "rules", "messages"]
_EXPORT_LINES_PER_CHUNK = 500


# ---------------------------------------------------------------- ids, filters, cursors


def item_id(key: ItemKey) -> str:
    return f"{key.import_id}:{key.row}"


def parse_item_id(raw: str) -> ItemKey:
    task, sep, row = raw.partition(":")
    try:
        if not sep:
            raise ValueError(raw)
        key = ItemKey(uuid.UUID(task), int(row))
    except ValueError:
        raise NotFound("not_found", f"no quarantine item {raw!r} (ids look like '<task_id>:<row>')") from None
    if not 1 <= key.row <= _ROW_MAX:
        raise NotFound("not_found", f"no quarantine item {raw!r}")
    return key


def _grant_headers(policies: PolicyRegistry) -> tuple[str, ...]:
    names = {"grant_code"}
    for policy in policies.all():
        for spec in policy.descriptor.get("fields", []):
            if spec.get("name") == "grant_code":
                names.update(normalise_header(a) for a in spec.get("x-ledger-aliases", []))
    return tuple(sorted(names))


def filter_for(policies: PolicyRegistry, principal: Principal, query: Query) -> ItemFilter:
    """The query as the database filters it, narrowed to the labs the principal sees."""
    if query.status is not None and query.status not in STATUSES:
        raise InvalidRequest("invalid_status", f"status must be one of {', '.join(sorted(STATUSES))}")
    if query.reason is not None and query.reason not in REASONS:
        raise InvalidRequest("invalid_reason", f"reason must be one of {', '.join(sorted(REASONS))}")
    labs = visible_labs(principal)
    if query.lab is not None:
        labs = (query.lab,) if labs is None or query.lab in labs else ()
    task: uuid.UUID | None = None
    if query.task_id is not None:
        try:
            task = uuid.UUID(query.task_id)
        except ValueError:
            raise InvalidRequest("invalid_task_id", f"task_id {query.task_id!r} is not a task id") from None
    contain: dict[str, str] = {}
    if query.rule:
        contain["rule"] = query.rule
    if query.field:
        contain["field"] = query.field
    return ItemFilter(
        status=query.status,
        reason=query.reason,
        errors_contain=[contain] if contain else None,
        labs=labs,
        grant_code=query.grant_code or None,
        grant_headers=_grant_headers(policies),
        task_id=task,
    )


def _cursor(item: ItemRow) -> str:
    """The queue's order: newest import first, then the import, then the row (qdb.list_items)."""
    return encode_cursor([item.quarantined_at.isoformat(), str(item.import_id), item.row])


def summary(item: ItemRow) -> ItemSummary:
    return ItemSummary(
        id=item_id(item.key),
        task_id=str(item.import_id),
        row=item.row,
        lab=item.lab,
        filename=item.filename,
        status=item.status,
        reason=item.reason,
        errors=item.errors,
        quarantined_at=item.quarantined_at,
        last_action=item.last_action,
        last_acted_at=item.last_acted_at,
    )


# ---------------------------------------------------------------- reading


async def list_items(
    pool: asyncpg.Pool[Any],
    policies: PolicyRegistry,
    principal: Principal,
    query: Query,
    *,
    limit: int,
    cursor: str | None,
) -> Page:
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {PAGE_LIMIT_MAX}")
    flt = filter_for(policies, principal, query)
    after = decode_cursor(cursor, tuple[datetime, uuid.UUID, int]) if cursor else None
    items = await qdb.list_items(pool, flt, after=after, limit=limit)
    counts = await qdb.counts(pool, flt)
    return Page(
        items=[summary(i) for i in items],
        next=_cursor(items[-1]) if len(items) == limit else None,
        facets=Facets(rules=counts.rules, fields=counts.fields),
    )


async def browse(
    pool: asyncpg.Pool[Any],
    policies: PolicyRegistry,
    principal: Principal,
    query: Query,
    *,
    limit: int,
    after: str | None = None,
    before: str | None = None,
) -> QueueView:
    """A page of the queue for someone paging through it both ways: the items after the cursor
    ``after``, or those before the cursor ``before``, or the first; the cursors of the pages on
    either side (None where there is none); how many items match; and how many would match
    each rule and each field under the other filters."""
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {PAGE_LIMIT_MAX}")
    if after is not None and before is not None:
        raise InvalidRequest("invalid_cursor", "give a cursor to page forward or one to page back, not both")
    flt = filter_for(policies, principal, query)
    raw = after if after is not None else before
    key = decode_cursor(raw, tuple[datetime, uuid.UUID, int]) if raw is not None else None
    if key is not None and not 1 <= key[2] <= _ROW_MAX:
        raise invalid_cursor()
    # The page and the counts are independent statements: on two connections at once, a page
    # of the queue takes the longer of the two rather than their sum.
    (page, previous, following), counts = await asyncio.gather(
        _page(pool, flt, limit=limit, key=key, backwards=before is not None),
        # The choices of rule and field are counted without either, so that another rule can
        # be picked straight away (counted with them, only the rules their items also break
        # would be left to pick).
        qdb.counts(pool, flt, choosing=True),
    )
    return QueueView(
        items=[summary(i) for i in page],
        next=_cursor(page[-1]) if page and following else None,
        previous=previous,
        matching=counts.matching,
        choices=Facets(rules=counts.rules, fields=counts.fields),
    )


async def _page(
    pool: asyncpg.Pool[Any],
    flt: ItemFilter,
    *,
    limit: int,
    key: tuple[datetime, uuid.UUID, int] | None,
    backwards: bool,
) -> tuple[list[ItemRow], str | None, bool]:
    """The items of a page (after ``key``, or before it when ``backwards``), the cursor of the
    page before it, and whether a page follows it."""
    if backwards:
        # One more than a page: whether there is a page before this one.
        rows = await qdb.list_items(pool, flt, after=None, before=key, limit=limit + 1)
        if len(rows) > limit:
            # A page in the middle: items before it, and after it (where the caller came from).
            return rows[1:], _cursor(rows[1]), True
        key = None  # back at the start: the first page, full
    rows = await qdb.list_items(pool, flt, after=key, limit=limit + 1)
    page = rows[:limit]
    return page, _cursor(page[0]) if key is not None and page else None, len(rows) > limit


async def readable_item(pool: asyncpg.Pool[Any], principal: Principal, raw_id: str) -> ItemRow:
    """The item ``raw_id`` names, as it stands now, if it is in a lab the principal sees: another
    lab's item answers exactly like an unknown one (404, same message)."""
    key = parse_item_id(raw_id)
    item = (await qdb.item_states(pool, [key])).get(key)
    if item is not None and not sees_lab(principal, item.lab):
        denied(principal, "the quarantine item belongs to a lab the caller does not act for", "other_lab")
    if item is None or not sees_lab(principal, item.lab):
        raise NotFound("not_found", f"no quarantine item {echo(raw_id)}")
    return item


def _field_names(policies: PolicyRegistry, item: ItemRow) -> list[str]:
    """The policy field each header position holds (the header's own spelling if unbindable)."""
    try:
        return list(policies.get(item.policy_name).bind_header(item.header).columns)
    except (UnknownPolicy, ManifestRefused):
        return [normalise_header(h) for h in item.header]


def _history_entry(seq: int, idx: int, record: bytes) -> HistoryEntry:
    review = parse_review(record)
    return HistoryEntry(
        seq=seq,
        idx=idx,
        action=review.action,
        status=review.status,
        reason=review.reason,
        actor=review.actor,
        at=review.at,
        note=review.note,
        values=review.values,
        policy=review.policy,
        correction=review.correction,
        error=review.error,
        transfer=review.transfer,
    )


async def get_item(pool: asyncpg.Pool[Any], policies: PolicyRegistry, principal: Principal, raw_id: str) -> ItemDetail:
    item = await readable_item(pool, principal, raw_id)
    key = item.key
    entries = await qdb.history(pool, key)
    names = _field_names(policies, item)
    return ItemDetail(
        id=item_id(key),
        task_id=str(item.import_id),
        row=item.row,
        lab=item.lab,
        status=item.status,
        reason=item.reason,
        errors=item.errors,
        header=item.header,
        cells=item.cells,
        fields={name: cell for name, cell in zip(names, item.cells, strict=False)},
        source=ImportRef(
            task_id=str(item.import_id),
            filename=item.filename,
            manifest_sha256=item.manifest_sha256,
            policy=PolicyRef(item.policy_name, item.policy_version, item.policy_sha256),
            receipt_seq=item.receipt_seq,
            finished_at=item.quarantined_at,
        ),
        history=[_history_entry(*e) for e in entries],
    )


async def accounting(pool: asyncpg.Pool[Any], principal: Principal, task_id: str) -> Accounting:
    """Every row of a manifest by final disposition, checked against its receipt."""
    import_id = (await readable_import(pool, principal, task_id)).id
    row = await qdb.accounting(pool, import_id)
    assert row is not None
    receipt_rows: dict[str, int] | None = None
    if row["receipt"] is not None:
        receipt_rows = msgspec.json.decode(bytes(row["receipt"]))["rows"]
    total, quarantined = row["total"], row["quarantined"]
    complete = (
        total == row["committed"] + row["duplicate"] + quarantined
        and quarantined == row["open"] + row["resolved"] + row["dismissed"]
        and row["resolved"] == row["resolved_committed"] + row["resolved_duplicate"]
        and receipt_rows is not None
        and receipt_rows
        == {"total": total, "committed": row["committed"], "duplicate": row["duplicate"], "quarantined": quarantined}
    )
    return Accounting(
        task_id=str(import_id),
        rows_total=total,
        committed=row["committed"],
        duplicate=row["duplicate"],
        quarantined=quarantined,
        open=row["open"],
        open_conflict=row["open_conflict"],
        open_transient_failure=row["open_transient"],
        resolved=row["resolved"],
        resolved_committed=row["resolved_committed"],
        resolved_duplicate=row["resolved_duplicate"],
        dismissed=row["dismissed"],
        receipt_rows=receipt_rows,
        complete=bool(complete),
    )


# ---------------------------------------------------------------- export


async def export_csv(
    pool: asyncpg.Pool[Any], policies: PolicyRegistry, principal: Principal, query: Query
) -> tuple[str, AsyncIterator[str]]:
    """The filtered queue as CSV, one line per item with its cells by field, spreadsheet-safe."""
    flt = filter_for(policies, principal, query)
    field_columns: list[str] = []
    for policy in policies.all():
        field_columns += [f for f in policy.field_names if f not in field_columns]

    async def chunks() -> AsyncIterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        buffer.write("\ufeff")  # Excel detects UTF-8 in a CSV only by its BOM
        writer.writerow(_EXPORT_COLUMNS + field_columns)
        names: dict[uuid.UUID, list[str]] = {}
        lines = 0
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for item in qdb.iter_items(conn, flt):
                if item.import_id not in names:
                    names[item.import_id] = _field_names(policies, item)
                by_field = dict(zip(names[item.import_id], item.cells, strict=False))
                cells = [
                    item_id(item.key),
                    str(item.import_id),
                    str(item.row),
                    item.lab,
                    item.filename or "",
                    item.status,
                    item.reason,
                    item.quarantined_at.isoformat(),
                    "; ".join(f"{e['field']}:{e['rule']}" for e in item.errors),
                    " | ".join(e["message"] for e in item.errors),
                    *(by_field.get(f, "") for f in field_columns),
                ]
                writer.writerow([neutralise_cell(c) for c in cells])
                lines += 1
                if lines >= _EXPORT_LINES_PER_CHUNK:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
                    lines = 0
        yield buffer.getvalue()

    return "quarantine.csv", chunks()
