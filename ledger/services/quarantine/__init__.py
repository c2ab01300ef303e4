"""Quarantine review: the queue, corrections, dismissals and bulk actions, all on the ledger.

Every decision is a review entry (ledger/core/review.py) linked onto the chain under the head
lock; an item's status is derived from its latest entry and never updated in place. The head
lock also makes decisions on one item mutually exclusive: the state is re-read under it, so of
two officers acting at once exactly one wins and the other gets 409 with the current state.

Reasons (docs/ledger-format.md §4.4):
- ``schema_violation`` / ``duplicate_key_in_manifest``: what the import found.
- ``other_lab``: the row's asset key belongs to another lab (the lab of its latest revision).
  A resubmit that would commit another lab's key is refused (409 ``other_lab``) and changes
  nothing; an officer may ``transfer`` the key to the item's lab instead, with a note saying
  why, which records who moved it from which lab to which on the ledger.
- ``conflict``: a correction whose key was revised in the ledger after the row was quarantined,
  to different content. It is refused (409) unless the officer passes ``"supersede": true``;
  the refusal is recorded, so the queue shows the item as a conflict.
- ``transient_failure``: a correction that was valid but could not be committed because the
  database failed transiently (lock timeout, serialisation failure, deadlock, lost
  connection). The attempt, with its values, is recorded; ``requeue`` retries it.

Modules: ``schemas`` (what callers send and get), ``reading`` (ids, filters, the queue, one item,
accounting, export), ``corrections`` (validating a correction), ``linking`` (deciding under the
head lock and linking entries onto the chain), ``decisions`` (resubmit, transfer, dismiss, bulk).
The tunables live where they are read and are not re-exported here, so that there is one copy
of each (``reading.PAGE_LIMIT_MAX``, ``decisions.BULK_ITEMS_MAX``,
``decisions.CORRECTION_LOCK_TIMEOUT_MS``).
"""

from __future__ import annotations

from ledger.services.quarantine.decisions import bulk, dismiss, resubmit, transfer
from ledger.services.quarantine.reading import accounting, browse, export_csv, get_item, list_items
from ledger.services.quarantine.schemas import (
    Accounting,
    BulkBody,
    BulkFilter,
    BulkResult,
    DismissBody,
    EntryRef,
    Facets,
    HistoryEntry,
    ImportRef,
    ItemDetail,
    ItemResult,
    ItemSummary,
    Page,
    Query,
    QueueView,
    ResubmitBody,
    TransferBody,
)

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
    "accounting",
    "browse",
    "bulk",
    "dismiss",
    "export_csv",
    "get_item",
    "list_items",
    "resubmit",
    "transfer",
]
