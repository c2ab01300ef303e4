"""Named limits of what one request may ask for. The limits of the bytes a file may hold are
ingestion's (ledger.ingest.limits), those of hashed data the core's (ledger.core.limits), and
the operator's choices are settings (ledger.config); tests/test_limits.py holds how they relate.
"""

from __future__ import annotations

__all__ = [
    "ASSETS_PAGE_MAX",
    "BULK_ITEMS_MAX",
    "CHECKPOINTS_PAGE_MAX",
    "IDEMPOTENCY_KEY_MAX",
    "IMPORTS_PAGE_MAX",
    "IMPORT_ROWS_PAGE_MAX",
    "NOTE_CHARS_MAX",
    "QUARANTINE_PAGE_MAX",
]

# One page of a listing. A quarantine page carries every broken rule and the original cells of
# each item, so it is smaller than the others.
ASSETS_PAGE_MAX = 1_000
IMPORT_ROWS_PAGE_MAX = 1_000
IMPORTS_PAGE_MAX = 500
QUARANTINE_PAGE_MAX = 500
CHECKPOINTS_PAGE_MAX = 1_000
# One bulk decision: a constant number of statements whatever the count, but one transaction
# under the head lock, which imports wait behind.
BULK_ITEMS_MAX = 1_000
# An officer's note or dismissal reason, which goes onto the ledger in a review entry.
NOTE_CHARS_MAX = 2_000
IDEMPOTENCY_KEY_MAX = 200

assert QUARANTINE_PAGE_MAX <= BULK_ITEMS_MAX, "a bulk call must cover at least a page the officer sees"
