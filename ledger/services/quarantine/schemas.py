"""What the quarantine service takes and gives: request bodies, filters and the structs it returns."""

from __future__ import annotations

from datetime import datetime

import msgspec

from ledger.core.review import Actor, Correction, PolicyRef, Transfer

__all__ = [
    "Accounting",
    "BulkBody",
    "BulkFilter",
    "BulkResult",
    "DismissBody",
    "EntryRef",
    "Facets",
    "HistoryEntry",
    "ImportRef",
    "ItemDetail",
    "ItemResult",
    "ItemSummary",
    "Page",
    "Query",
    "QueueView",
    "ResubmitBody",
    "TransferBody",
]


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


class TransferBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An officer's transfer of the item's asset key from the lab that holds it to the item's."""

    # Why the key moves: required, and recorded on the ledger with the decision.
    note: str
    values: dict[str, str] = {}
    policy: str | None = None


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


class QueueView(msgspec.Struct, frozen=True):
    """A page of the queue as the pages show it (ledger.web): the cursors of the pages on either
    side, how many items the filter matches, and the facets of the filter without its rule and
    field (the items of each rule and field under the other filters: what choosing it would
    match)."""

    items: list[ItemSummary]
    next: str | None
    previous: str | None
    matching: int
    choices: Facets


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
    # Transfers only: the lab that held the asset key and the lab it moved to.
    transfer: Transfer | None = None


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
    # resolved | dismissed | conflict | transient_failure | other_lab | not_other_lab | skipped |
    # not_found | invalid
    result: str
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
