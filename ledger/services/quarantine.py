"""Quarantine review: the queue, corrections, dismissals and bulk actions, all on the ledger.

Every decision is a review entry (ledger/core/review.py) linked onto the chain under the head
lock; an item's status is derived from its latest entry and never updated in place. The head
lock also makes decisions on one item mutually exclusive: the state is re-read under it, so of
two officers acting at once exactly one wins and the other gets 409 with the current state.

Reasons (docs/ledger-format.md §4.4):
- ``schema_violation`` / ``duplicate_key_in_manifest``: what the import found.
- ``conflict``: a correction whose key was revised in the ledger after the row was quarantined,
  to different content. It is refused (409) unless the officer passes ``"supersede": true``;
  the refusal is recorded, so the queue shows the item as a conflict.
- ``transient_failure``: a correction that was valid but could not be committed because the
  database failed transiently (lock timeout, serialisation failure, deadlock, lost
  connection). The attempt, with its values, is recorded; ``requeue`` retries it.
"""

from __future__ import annotations

import base64
import csv
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from ledger.config import Settings
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import root
from ledger.core.policy import ManifestRefused, Policy, normalise_header
from ledger.core.records import asset_record, format_time
from ledger.core.review import REASONS, STATUSES, Actor, Correction, PolicyRef, Review, parse_review, review_record
from ledger.db import chain
from ledger.db import quarantine as qdb
from ledger.db.pool import Conn
from ledger.db.quarantine import ItemFilter, ItemKey, ItemRow
from ledger.errors import Conflict, InvalidRequest, NotFound, Unavailable
from ledger.ingest.errors_csv import neutralise_cell
from ledger.ingest.limits import quarantined_cell_chars_max
from ledger.logs import get_logger
from ledger.services.access import READERS, Principal, require_lab, require_role, visible_labs
from ledger.services.policies import PolicyRegistry, UnknownPolicy

__all__ = [
    "ACTORS",
    "BULK_ITEMS_MAX",
    "PAGE_LIMIT_MAX",
    "BulkBody",
    "BulkFilter",
    "DismissBody",
    "Query",
    "ResubmitBody",
    "accounting",
    "bulk",
    "dismiss",
    "export_csv",
    "get_item",
    "list_items",
    "resubmit",
]

log = get_logger("ledger.quarantine")

ACTORS = ("compliance_officer", "admin")
# Items one bulk call decides; with a filter, the newest this many and the rest are reported.
BULK_ITEMS_MAX = 1_000
PAGE_LIMIT_MAX = 500
NOTE_CHARS_MAX = 2_000
# How long a decision waits for a lock (the head lock is held for the whole final transaction
# of an import, which can take a while for a large one) before it counts as a transient failure.
CORRECTION_LOCK_TIMEOUT_MS = 15_000
_BULK_ACTIONS = ("dismiss", "requeue")
_POLICY_CHOICES = ("original", "current")

# Database failures worth retrying: the request was fine, the moment was not.
_TRANSIENT: dict[type[BaseException], str] = {
    asyncpg.LockNotAvailableError: "lock_not_available",
    asyncpg.SerializationError: "serialization_failure",
    asyncpg.DeadlockDetectedError: "deadlock_detected",
    asyncpg.QueryCanceledError: "query_canceled",
    asyncpg.ConnectionDoesNotExistError: "connection_lost",
    asyncpg.CannotConnectNowError: "cannot_connect_now",
}


# ---------------------------------------------------------------- wire types


class Query(msgspec.Struct, frozen=True, kw_only=True):
    status: str | None = None
    reason: str | None = None
    rule: str | None = None
    field: str | None = None
    lab: str | None = None
    grant_code: str | None = None
    task_id: str | None = None


class BulkFilter(Query, frozen=True, forbid_unknown_fields=True):
    pass


class ResubmitBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    values: dict[str, str] = {}
    note: str | None = None
    # "original" (default): the policy version that rejected the row; "current": the loaded one.
    policy: str | None = None
    # Commit even though the key was revised in the ledger since the row was quarantined.
    supersede: bool = False


class DismissBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: str


class BulkBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: str
    ids: list[str] | None = None
    filter: BulkFilter | None = None
    reason: str | None = None


class ItemSummary(msgspec.Struct, frozen=True):
    id: str
    task_id: str
    row: int
    lab: str
    filename: str | None
    status: str
    reason: str
    errors: list[dict[str, str]]
    quarantined_at: datetime
    last_action: str | None
    last_acted_at: datetime | None


class Facets(msgspec.Struct, frozen=True):
    rules: dict[str, int]
    fields: dict[str, int]


class Page(msgspec.Struct, frozen=True):
    items: list[ItemSummary]
    next: str | None
    facets: Facets


class ImportRef(msgspec.Struct, frozen=True):
    task_id: str
    filename: str | None
    manifest_sha256: str
    policy: PolicyRef
    receipt_seq: int | None
    finished_at: datetime


class HistoryEntry(msgspec.Struct, frozen=True):
    seq: int
    idx: int
    action: str
    status: str
    reason: str
    actor: Actor
    at: str
    note: str | None
    values: dict[str, str] | None
    policy: PolicyRef | None
    correction: Correction | None
    error: str | None


class ItemDetail(msgspec.Struct, frozen=True):
    id: str
    task_id: str
    row: int
    lab: str
    status: str
    reason: str
    errors: list[dict[str, str]]
    header: list[str]
    cells: list[str]
    # The original cells by policy field name (header aliases resolved).
    fields: dict[str, str]
    source: ImportRef
    history: list[HistoryEntry]


class EntryRef(msgspec.Struct, frozen=True):
    seq: int
    idx: int


class ItemResult(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    result: str  # resolved | dismissed | conflict | transient_failure | skipped | not_found | invalid
    status: str | None = None
    reason: str | None = None
    code: str | None = None
    message: str | None = None
    outcome: str | None = None  # committed | duplicate (resolved), conflict, failed
    record_hash: str | None = None
    entry: EntryRef | None = None
    errors: list[dict[str, str]] | None = None


class BulkResult(msgspec.Struct, frozen=True):
    action: str
    requested: int
    acted: int
    remaining: int
    items: list[ItemResult]


class Accounting(msgspec.Struct, frozen=True):
    task_id: str
    rows_total: int
    committed: int
    duplicate: int
    quarantined: int
    open: int
    open_conflict: int
    open_transient_failure: int
    resolved: int
    resolved_committed: int
    resolved_duplicate: int
    dismissed: int
    receipt_rows: dict[str, int] | None
    complete: bool


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
    if key.row < 1:
        raise NotFound("not_found", f"no quarantine item {raw!r}")
    return key


def _grant_headers(policies: PolicyRegistry) -> tuple[str, ...]:
    names = {"grant_code"}
    for policy in policies.all():
        for spec in policy.descriptor.get("fields", []):
            if spec.get("name") == "grant_code":
                names.update(normalise_header(a) for a in spec.get("x-ledger-aliases", []))
    return tuple(sorted(names))


def _filter(policies: PolicyRegistry, principal: Principal, query: Query) -> ItemFilter:
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


def _encode_cursor(item: ItemRow) -> str:
    raw = msgspec.json.encode([item.quarantined_at.isoformat(), str(item.import_id), item.row])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, task, row = msgspec.json.decode(raw, type=tuple[str, str, int])
        return datetime.fromisoformat(at), uuid.UUID(task), row
    except (ValueError, msgspec.DecodeError):
        raise InvalidRequest("invalid_cursor", "cursor is not one this service issued") from None


def _summary(item: ItemRow) -> ItemSummary:
    return ItemSummary(
        id=item_id(ItemKey(item.import_id, item.row)),
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
    require_role(principal, READERS)
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {PAGE_LIMIT_MAX}")
    flt = _filter(policies, principal, query)
    after = _decode_cursor(cursor) if cursor else None
    items = await qdb.list_items(pool, flt, after=after, limit=limit)
    rules, fields = await qdb.facets(pool, flt)
    return Page(
        items=[_summary(i) for i in items],
        next=_encode_cursor(items[-1]) if len(items) == limit else None,
        facets=Facets(rules=rules, fields=fields),
    )


async def _readable_item(pool: asyncpg.Pool[Any], principal: Principal, raw_id: str) -> ItemRow:
    key = parse_item_id(raw_id)
    item = (await qdb.item_states(pool, [key])).get(key)
    if item is None:
        raise NotFound("not_found", f"no quarantine item {raw_id!r}")
    require_lab(principal, item.lab)
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
    )


async def get_item(pool: asyncpg.Pool[Any], policies: PolicyRegistry, principal: Principal, raw_id: str) -> ItemDetail:
    require_role(principal, READERS)
    item = await _readable_item(pool, principal, raw_id)
    key = ItemKey(item.import_id, item.row)
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
    require_role(principal, READERS)
    try:
        import_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound("not_found", f"no import {task_id!r}") from None
    lab = await pool.fetchval("SELECT lab FROM imports WHERE id = $1", import_id)
    if lab is None:
        raise NotFound("not_found", f"no import {task_id!r}")
    require_lab(principal, lab)
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


_EXPORT_COLUMNS = ["id", "task_id", "row", "lab", "filename", "status", "reason", "quarantined_at", "rules", "messages"]
_EXPORT_LINES_PER_CHUNK = 500


async def export_csv(
    pool: asyncpg.Pool[Any], policies: PolicyRegistry, principal: Principal, query: Query
) -> tuple[str, AsyncIterator[str]]:
    """The filtered queue as CSV, one line per item with its cells by field, spreadsheet-safe."""
    require_role(principal, READERS)
    flt = _filter(policies, principal, query)
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
                    item_id(ItemKey(item.import_id, item.row)),
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


# ---------------------------------------------------------------- deciding


class _Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """A validated correction, ready to be decided under the head lock."""

    key: ItemKey
    action: str  # resubmit | requeue
    values: dict[str, str]
    note: str | None
    policy: PolicyRef
    record: bytes
    leaf: bytes
    asset_key: tuple[str, str]
    supersede: bool


class _Dismissal(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    note: str


class _Outcome(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    result: str
    status: str
    reason: str
    outcome: str | None = None
    record_hash: str | None = None
    entry: EntryRef | None = None
    item: ItemRow | None = None  # the current state, when the item was not acted on


def _check_note(note: str | None, *, required: bool, what: str) -> str | None:
    if note is not None and len(note) > NOTE_CHARS_MAX:
        raise InvalidRequest("note_too_long", f"{what} is limited to {NOTE_CHARS_MAX} characters")
    if required and not (note or "").strip():
        raise InvalidRequest(f"{what}_required", f"give a non-empty {what}")
    return note


def _policy_for(policies: PolicyRegistry, item: ItemRow, choice: str | None) -> Policy:
    """The policy version that rejected the row, or the current one when asked explicitly."""
    if choice is not None and choice not in _POLICY_CHOICES:
        raise InvalidRequest("invalid_policy_choice", 'policy must be "original" or "current"')
    try:
        current = policies.get(item.policy_name)
    except UnknownPolicy as exc:
        raise Conflict("policy_unavailable", str(exc)) from exc
    if current.sha256 == item.policy_sha256 or choice == "current":
        return current
    raise Conflict(
        "policy_version_unavailable",
        f"the row was rejected by policy {item.policy_name!r} version {item.policy_version} "
        f'(sha256 {item.policy_sha256}), which is no longer loaded; pass "policy": "current" to '
        f"validate with version {current.version} (sha256 {current.sha256})",
        rejected_with={"name": item.policy_name, "version": item.policy_version, "sha256": item.policy_sha256},
        current={"name": current.name, "version": current.version, "sha256": current.sha256},
    )


def _correct(policy: Policy, item: ItemRow, values: dict[str, str]) -> tuple[bytes, tuple[str, str]]:
    """Merge ``values`` into the original row and validate it; the asset record and its key.

    Cells are aligned to the import's header (a row with too many or too few cells is cut or
    padded), and a field the header lacked is added as a column.
    """
    known = set(policy.field_names)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidRequest(
            "unknown_field", f"policy {policy.name!r} has no field {', '.join(unknown)}", fields=unknown
        )
    too_long = sorted(f for f, v in values.items() if len(v) > quarantined_cell_chars_max)
    if too_long:
        raise InvalidRequest(
            "value_too_long", f"values are limited to {quarantined_cell_chars_max} characters: {', '.join(too_long)}"
        )
    header = list(item.header)
    cells = (list(item.cells) + [""] * len(header))[: len(header)]
    try:
        columns = list(policy.bind_header(header).columns)
    except ManifestRefused as exc:
        raise InvalidRequest("header_not_bindable", f"the import's header does not fit the policy: {exc}") from exc
    for name in sorted(set(values) - set(columns)):
        header.append(name)
        columns.append(name)
        cells.append("")
    for position, name in enumerate(columns):
        if name in values:
            cells[position] = values[name]
    result = policy.bind_header(header).validate(cells)
    if result.errors:
        raise InvalidRequest(
            "still_invalid",
            f"row {item.row} still breaks {len(result.errors)} rule(s) of policy {policy.name!r} "
            f"version {policy.version}; nothing was changed",
            item=item_id(ItemKey(item.import_id, item.row)),
            row=item.row,
            errors=[{"field": v.field, "rule": v.rule, "message": v.message} for v in result.errors],
        )
    assert result.data is not None and result.key is not None
    return asset_record(policy=policy.name, lab=item.lab, data=result.data), (result.key[0], result.key[1])


async def _actor(pool: asyncpg.Pool[Any], principal: Principal) -> Actor:
    label = await pool.fetchval("SELECT label FROM tokens WHERE id = $1", principal.token_id)
    return Actor(token_id=str(principal.token_id), role=principal.role, label=label)


def _review_bytes(
    key: ItemKey,
    *,
    action: str,
    status: str,
    reason: str,
    actor: Actor,
    at: str,
    note: str | None,
    attempt: _Attempt | None = None,
    correction: Correction | None = None,
    error: str | None = None,
) -> bytes:
    return review_record(
        task_id=str(key.import_id),
        row=key.row,
        action=action,
        status=status,
        reason=reason,
        actor=actor,
        at=at,
        note=note,
        values=None if attempt is None else attempt.values,
        policy=None if attempt is None else attempt.policy,
        correction=correction,
        error=error,
    )


class _Planned(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    record: bytes
    action: str
    status: str
    reason: str
    correction: bytes | None  # the asset record to commit with it, if any
    asset_key: tuple[str, str] | None
    revision: int
    outcome: str | None
    record_hash: str | None


async def _decide(
    conn: Conn,
    actor: Actor,
    principal: Principal,
    attempts: Sequence[_Attempt],
    dismissals: Sequence[_Dismissal],
    *,
    requeue: bool,
    batch_rows_max: int,
) -> list[_Outcome]:
    """One transaction: lock the head, re-read every item, decide, link and insert."""
    outcomes: list[_Outcome] = []
    async with conn.transaction():
        await qdb.set_lock_timeout(conn, CORRECTION_LOCK_TIMEOUT_MS)
        head = await chain.lock_head(conn)
        keys = [a.key for a in attempts] + [d.key for d in dismissals]
        states = await qdb.item_states(conn, keys)
        latest = await qdb.latest_assets(conn, sorted({a.asset_key for a in attempts}))
        now = datetime.now(UTC)
        at = format_time(now)
        planned: list[_Planned] = []
        for attempt in attempts:
            item = states[attempt.key]
            if item.status != "open" or (requeue and item.reason != "transient_failure"):
                outcomes.append(_not_open(item))
                continue
            current = latest.get(attempt.asset_key)
            ledger_hash = None if current is None else current.leaf_hash.hex()
            revised_since = (
                current is not None
                and item.receipt_seq is not None
                and current.batch_seq > item.receipt_seq
                and current.leaf_hash != attempt.leaf
            )
            if current is not None and current.leaf_hash == attempt.leaf:
                outcome, status, reason, action = "duplicate", "resolved", item.reason, attempt.action
            elif revised_since and not attempt.supersede:
                outcome, status, reason, action = "conflict", "open", "conflict", "conflict"
            else:
                outcome, status, reason, action = "committed", "resolved", item.reason, attempt.action
                # Later attempts in this call see this revision, committed after every receipt.
                latest[attempt.asset_key] = qdb.AssetHead(
                    (0 if current is None else current.revision) + 1, attempt.leaf, 1 << 62
                )
            record = _review_bytes(
                attempt.key,
                action=action,
                status=status,
                reason=reason,
                actor=actor,
                at=at,
                note=attempt.note,
                attempt=attempt,
                correction=Correction(outcome=outcome, record_hash=attempt.leaf.hex(), ledger_hash=ledger_hash),
            )
            planned.append(
                _Planned(
                    key=attempt.key,
                    record=record,
                    action=action,
                    status=status,
                    reason=reason,
                    correction=attempt.record if outcome == "committed" else None,
                    asset_key=attempt.asset_key,
                    revision=latest[attempt.asset_key].revision if outcome == "committed" else 0,
                    outcome=outcome,
                    record_hash=attempt.leaf.hex(),
                )
            )
        for dismissal in dismissals:
            item = states[dismissal.key]
            if item.status != "open":
                outcomes.append(_not_open(item))
                continue
            record = _review_bytes(
                dismissal.key,
                action="dismiss",
                status="dismissed",
                reason=item.reason,
                actor=actor,
                at=at,
                note=dismissal.note,
            )
            planned.append(
                _Planned(
                    key=dismissal.key,
                    record=record,
                    action="dismiss",
                    status="dismissed",
                    reason=item.reason,
                    correction=None,
                    asset_key=None,
                    revision=0,
                    outcome=None,
                    record_hash=None,
                )
            )
        if not planned:
            return outcomes
        # Each chunk: its corrections (an assets batch without manifest), then the review batch
        # that accounts for them. Review entries are in the same order as the corrections.
        batches: list[chain.NewBatch] = []
        corrections: list[qdb.NewCorrection] = []
        reviews: list[qdb.NewReview] = []
        seq = head.seq
        for start in range(0, len(planned), batch_rows_max):
            chunk = planned[start : start + batch_rows_max]
            committed = [p for p in chunk if p.correction is not None]
            if committed:
                seq += 1
                leaves = []
                for idx, p in enumerate(committed):
                    assert p.correction is not None and p.asset_key is not None
                    leaf = leaf_hash(p.correction)
                    leaves.append(leaf)
                    corrections.append(
                        qdb.NewCorrection(
                            batch_seq=seq,
                            idx=idx,
                            record=p.correction,
                            leaf_hash=leaf,
                            asset_id=p.asset_key[0],
                            grant_code=p.asset_key[1],
                            revision=p.revision,
                            item=p.key,
                        )
                    )
                batches.append(_new_batch("assets", leaves))
            seq += 1
            leaves = []
            for idx, p in enumerate(chunk):
                leaf = leaf_hash(p.record)
                leaves.append(leaf)
                reviews.append(
                    qdb.NewReview(
                        batch_seq=seq,
                        idx=idx,
                        record=p.record,
                        leaf_hash=leaf,
                        item=p.key,
                        action=p.action,
                        status=p.status,
                        reason=p.reason,
                        actor=principal.token_id,
                        record_hash=None if p.record_hash is None else bytes.fromhex(p.record_hash),
                    )
                )
                outcomes.append(
                    _Outcome(
                        key=p.key,
                        result={"resolved": "resolved", "dismissed": "dismissed"}.get(p.status, p.outcome or ""),
                        status=p.status,
                        reason=p.reason,
                        outcome=p.outcome,
                        record_hash=p.record_hash,
                        entry=EntryRef(seq, idx),
                    )
                )
            batches.append(_new_batch("review", leaves))
        head = await chain.append_batches(conn, head, batches, now)
        assert head.seq == seq
        await qdb.insert_corrections(conn, corrections, now)
        await qdb.insert_reviews(conn, reviews, now)
        await chain.advance_head(conn, head)
    return outcomes


def _new_batch(kind: str, leaves: list[bytes]) -> chain.NewBatch:
    # Corrections and reviews span manifests: their headers name no manifest and no policy
    # (each review entry names the policy that validated its correction).
    return chain.NewBatch(
        kind=kind, root=root(leaves), records=len(leaves), manifest_sha256=None, policy_sha256=None, import_id=None
    )


def _not_open(item: ItemRow) -> _Outcome:
    return _Outcome(
        key=ItemKey(item.import_id, item.row), result="skipped", status=item.status, reason=item.reason, item=item
    )


def _transient_code(exc: BaseException) -> str | None:
    for kind, code in _TRANSIENT.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, (ConnectionError, OSError, asyncpg.InterfaceError)):
        return "connection_lost"
    return None


async def _run(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    principal: Principal,
    attempts: Sequence[_Attempt],
    dismissals: Sequence[_Dismissal],
    *,
    requeue: bool,
) -> list[_Outcome]:
    """Decide; if the database fails transiently, record the corrections as failed attempts."""
    actor = await _actor(pool, principal)
    try:
        async with pool.acquire() as conn:
            return await _decide(
                conn,
                actor,
                principal,
                attempts,
                dismissals,
                requeue=requeue,
                batch_rows_max=settings.batch_rows_max,
            )
    except Exception as exc:
        code = _transient_code(exc)
        if code is None:
            raise
        log.warning("correction_transient_failure", stage="quarantine", code=code, items=len(attempts))
        if not attempts:
            raise Unavailable("transient_failure", f"the database failed transiently ({code}); try again") from exc
        try:
            async with pool.acquire() as conn:
                return await _record_failures(conn, actor, principal, attempts, code, settings.batch_rows_max)
        except Exception as again:
            if _transient_code(again) is None:
                raise
            raise Unavailable(
                "transient_failure", f"the database failed transiently ({code}) and the attempt could not be recorded"
            ) from again


async def _record_failures(
    conn: Conn, actor: Actor, principal: Principal, attempts: Sequence[_Attempt], code: str, batch_rows_max: int
) -> list[_Outcome]:
    outcomes: list[_Outcome] = []
    async with conn.transaction():
        head = await chain.lock_head(conn)
        states = await qdb.item_states(conn, [a.key for a in attempts])
        now = datetime.now(UTC)
        at = format_time(now)
        reviews: list[qdb.NewReview] = []
        batches: list[chain.NewBatch] = []
        seq = head.seq
        open_attempts = []
        for attempt in attempts:
            item = states[attempt.key]
            if item.status != "open":
                outcomes.append(_not_open(item))
            else:
                open_attempts.append(attempt)
        for start in range(0, len(open_attempts), batch_rows_max):
            seq += 1
            leaves = []
            for idx, attempt in enumerate(open_attempts[start : start + batch_rows_max]):
                record = _review_bytes(
                    attempt.key,
                    action="failed",
                    status="open",
                    reason="transient_failure",
                    actor=actor,
                    at=at,
                    note=attempt.note,
                    attempt=attempt,
                    correction=Correction(outcome="failed", record_hash=attempt.leaf.hex(), ledger_hash=None),
                    error=code,
                )
                leaf = leaf_hash(record)
                leaves.append(leaf)
                reviews.append(
                    qdb.NewReview(
                        batch_seq=seq,
                        idx=idx,
                        record=record,
                        leaf_hash=leaf,
                        item=attempt.key,
                        action="failed",
                        status="open",
                        reason="transient_failure",
                        actor=principal.token_id,
                        record_hash=attempt.leaf,
                    )
                )
                outcomes.append(
                    _Outcome(
                        key=attempt.key,
                        result="transient_failure",
                        status="open",
                        reason="transient_failure",
                        outcome="failed",
                        record_hash=attempt.leaf.hex(),
                        entry=EntryRef(seq, idx),
                    )
                )
            batches.append(_new_batch("review", leaves))
        if batches:
            head = await chain.append_batches(conn, head, batches, now)
            await qdb.insert_reviews(conn, reviews, now)
            await chain.advance_head(conn, head)
    return outcomes


def _result(outcome: _Outcome) -> ItemResult:
    code = message = None
    if outcome.result == "skipped":
        code = "not_open"
        message = f"the item is already {outcome.status} ({outcome.reason}); nothing was done"
        if outcome.status == "open":
            code, message = "not_transient", f"the item's reason is {outcome.reason}, not transient_failure"
    elif outcome.result == "conflict":
        code = "revised_since"
        message = (
            "the asset was revised in the ledger after this row was quarantined, to other content; "
            'the attempt is recorded; resubmit with "supersede": true to commit it anyway, or dismiss'
        )
    elif outcome.result == "transient_failure":
        code = "transient_failure"
        message = "the correction could not be committed for a transient database failure; it is recorded; requeue"
    return ItemResult(
        id=item_id(outcome.key),
        result=outcome.result,
        status=outcome.status,
        reason=outcome.reason,
        code=code,
        message=message,
        outcome=outcome.outcome,
        record_hash=outcome.record_hash,
        entry=outcome.entry,
    )


def _single(outcome: _Outcome) -> ItemResult:
    """One item's answer; a lost race or a refusal is a 409 that carries the current state."""
    result = _result(outcome)
    if outcome.result == "skipped":
        assert outcome.item is not None
        raise Conflict(
            "already_decided" if outcome.status != "open" else "not_transient",
            result.message or "",
            item=msgspec.to_builtins(_summary(outcome.item)),
        )
    if outcome.result == "conflict":
        raise Conflict("revised_since", result.message or "", result=msgspec.to_builtins(result))
    if outcome.result == "transient_failure":
        raise Unavailable("transient_failure", result.message or "", result=msgspec.to_builtins(result))
    return result


# ---------------------------------------------------------------- acting


def _attempt(
    policies: PolicyRegistry,
    item: ItemRow,
    *,
    action: str,
    values: dict[str, str],
    note: str | None,
    policy_choice: str | None,
    supersede: bool,
) -> _Attempt:
    policy = _policy_for(policies, item, policy_choice)
    record, asset_key = _correct(policy, item, values)
    return _Attempt(
        key=ItemKey(item.import_id, item.row),
        action=action,
        values=dict(sorted(values.items())),
        note=note,
        policy=PolicyRef(policy.name, policy.version, policy.sha256),
        record=record,
        leaf=leaf_hash(record),
        asset_key=asset_key,
        supersede=supersede,
    )


async def resubmit(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    raw_id: str,
    body: ResubmitBody,
) -> ItemResult:
    require_role(principal, ACTORS)
    _check_note(body.note, required=False, what="note")
    item = await _readable_item(pool, principal, raw_id)
    if item.status != "open":
        _single(_not_open(item))
    attempt = _attempt(
        policies,
        item,
        action="resubmit",
        values=body.values,
        note=body.note,
        policy_choice=body.policy,
        supersede=body.supersede,
    )
    (outcome,) = await _run(pool, settings, principal, [attempt], [], requeue=False)
    return _single(outcome)


async def dismiss(
    pool: asyncpg.Pool[Any], settings: Settings, principal: Principal, raw_id: str, body: DismissBody
) -> ItemResult:
    require_role(principal, ACTORS)
    note = _check_note(body.reason, required=True, what="reason")
    assert note is not None
    item = await _readable_item(pool, principal, raw_id)
    (outcome,) = await _run(
        pool, settings, principal, [], [_Dismissal(key=ItemKey(item.import_id, item.row), note=note)], requeue=False
    )
    return _single(outcome)


async def bulk(
    pool: asyncpg.Pool[Any], settings: Settings, policies: PolicyRegistry, principal: Principal, body: BulkBody
) -> BulkResult:
    """Dismiss or requeue many items: a constant number of statements whatever their count."""
    require_role(principal, ACTORS)
    if body.action not in _BULK_ACTIONS:
        raise InvalidRequest("invalid_action", f"action must be one of {', '.join(_BULK_ACTIONS)}")
    if (body.ids is None) == (body.filter is None):
        raise InvalidRequest("ids_or_filter", 'give either "ids" or "filter"')
    note = _check_note(body.reason, required=body.action == "dismiss", what="reason")
    remaining = 0
    results: dict[ItemKey, ItemResult] = {}
    # (id as given, key or None when the id is not one this service issues), in request order.
    order: list[tuple[str, ItemKey | None]] = []
    if body.ids is not None:
        if not 1 <= len(body.ids) <= BULK_ITEMS_MAX:
            raise InvalidRequest("too_many_items", f"give 1 to {BULK_ITEMS_MAX} ids per call")
        seen: set[ItemKey] = set()
        for raw in body.ids:
            try:
                key: ItemKey | None = parse_item_id(raw)
            except NotFound:
                key = None
            if key is None or key not in seen:
                order.append((raw, key))
            if key is not None:
                seen.add(key)
        wanted = [k for _, k in order if k is not None]
    else:
        assert body.filter is not None
        # A filter acts on open items only; requeue on those that failed transiently.
        reason = "transient_failure" if body.action == "requeue" else body.filter.reason
        query = BulkFilter(**{**msgspec.structs.asdict(body.filter), "status": "open", "reason": reason})
        flt = _filter(policies, principal, query)
        rows = await qdb.list_items(pool, flt, after=None, limit=BULK_ITEMS_MAX + 1)
        wanted = [ItemKey(r.import_id, r.row) for r in rows[:BULK_ITEMS_MAX]]
        if len(rows) > BULK_ITEMS_MAX:
            remaining = await qdb.count_items(pool, flt) - BULK_ITEMS_MAX
        order = [(item_id(k), k) for k in wanted]
    states = await qdb.item_states(pool, wanted)
    labs = visible_labs(principal)
    actionable: list[ItemRow] = []
    for key in wanted:
        item = states.get(key)
        if item is None or (labs is not None and item.lab not in labs):
            results[key] = ItemResult(
                id=item_id(key), result="not_found", code="not_found", message="no such quarantine item"
            )
        elif item.status != "open" or (body.action == "requeue" and item.reason != "transient_failure"):
            results[key] = _result(_not_open(item))
        else:
            actionable.append(item)
    attempts: list[_Attempt] = []
    dismissals: list[_Dismissal] = []
    for item in actionable:
        key = ItemKey(item.import_id, item.row)
        if body.action == "dismiss":
            assert note is not None
            dismissals.append(_Dismissal(key=key, note=note))
            continue
        try:
            attempts.append(_replay(policies, item, note))
        except (InvalidRequest, Conflict) as exc:
            results[key] = ItemResult(
                id=item_id(key),
                result="invalid",
                status=item.status,
                reason=item.reason,
                code=exc.code,
                message=exc.message,
                errors=exc.extra.get("errors"),
            )
    if attempts or dismissals:
        for outcome in await _run(pool, settings, principal, attempts, dismissals, requeue=body.action == "requeue"):
            results[outcome.key] = _result(outcome)
    items = [
        results[key] if key is not None else ItemResult(id=raw, result="not_found", code="not_found")
        for raw, key in order
    ]
    return BulkResult(
        action=body.action,
        requested=len(order),
        acted=sum(1 for r in items if r.result in ("resolved", "dismissed")),
        remaining=remaining,
        items=items,
    )


def _replay(policies: PolicyRegistry, item: ItemRow, note: str | None) -> _Attempt:
    """The correction recorded by the item's latest (failed) entry, validated again."""
    assert item.last_record is not None
    failed: Review = parse_review(item.last_record)
    assert failed.policy is not None and failed.values is not None
    try:
        policy = policies.get(failed.policy.name)
    except UnknownPolicy as exc:
        raise Conflict("policy_unavailable", str(exc)) from exc
    if policy.sha256 != failed.policy.sha256:
        raise Conflict(
            "policy_version_unavailable",
            f"the failed correction was validated with policy {failed.policy.name!r} version "
            f"{failed.policy.version}, which is no longer loaded; resubmit it instead",
        )
    choice = "current" if policy.sha256 != item.policy_sha256 else None
    return _attempt(
        policies,
        item,
        action="requeue",
        values=failed.values,
        note=note if note else failed.note,
        policy_choice=choice,
        supersede=False,
    )
