"""Row outcomes (docs/ledger-format.md §4.2): what became of each data row of a manifest.

Their canonical bytes are defined here and only here. The commit path's SQL (ledger.db.
stored_outcomes), verification, the export and the bundle verifier all write or read
accepted outcomes through ``ACCEPTED_TEMPLATE`` and the prefixes derived from it;
tests/core/test_outcomes.py holds every one of them to ``row_outcome``'s general encoder.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ledger.core.canonical import encode
from ledger.core.errors import LedgerFormatError
from ledger.core.limits import integer_max
from ledger.core.records import FORMAT_VERSION

__all__ = [
    "ACCEPTED",
    "ACCEPTED_TEMPLATE",
    "COMMITTED_HASH_AT",
    "COMMITTED_PREFIX",
    "DUPLICATE_PREFIX",
    "OUTCOMES",
    "QUARANTINED_PREFIX",
    "row_outcome",
]

OUTCOMES = frozenset({"committed", "duplicate", "quarantined"})
# Outcomes of rows that became (or already were) a record: no errors, no cells.
ACCEPTED = ("committed", "duplicate")

# An accepted outcome's canonical bytes are this text with its outcome, record hash and row
# filled in (keys in sorted order; none of the three values needs escaping).
ACCEPTED_TEMPLATE = (
    b'{"errors":[],"outcome":"%s","record_hash":"%s","row":%d,"type":"row_outcome","v":'
    + str(FORMAT_VERSION).encode()
    + b"}"
)
_BEFORE_OUTCOME, _, _AFTER_OUTCOME = ACCEPTED_TEMPLATE.partition(b"%s")
_BEFORE_HASH = _AFTER_OUTCOME.partition(b"%s")[0]

# How a reader recognises an outcome by its first bytes: a committed one (its record hash,
# 64 hex digits, starts at COMMITTED_HASH_AT), a duplicate, and a quarantined one, whose
# "cells" member sorts first.
COMMITTED_PREFIX = _BEFORE_OUTCOME + b"committed" + _BEFORE_HASH
COMMITTED_HASH_AT = len(COMMITTED_PREFIX)
DUPLICATE_PREFIX = _BEFORE_OUTCOME + b'duplicate"'
QUARANTINED_PREFIX = b'{"cells":'

_HEX64 = re.compile(r"[0-9a-f]{64}")


def row_outcome(
    *,
    row: int,
    outcome: str,
    record_hash: str | None,
    errors: Sequence[tuple[str, str]] = (),
    cells: Sequence[str] | None = None,
) -> bytes:
    """What became of one data row; the receipt's outcomes_root is the Merkle root of these."""
    if (
        cells is None
        and not errors
        and record_hash is not None
        and (outcome == "committed" or outcome == "duplicate")
        and type(row) is int
        and 0 <= row <= integer_max
        and _HEX64.fullmatch(record_hash)
    ):
        # Most rows: the canonical bytes are the template (every value needs no escaping).
        # Verification re-encodes millions of them, so it matters; tests/core/test_outcomes.py
        # checks it against the general encoder below.
        return ACCEPTED_TEMPLATE % (outcome.encode(), record_hash.encode(), row)
    if outcome not in OUTCOMES:
        raise LedgerFormatError(f"unknown outcome {outcome!r}")
    quarantined = outcome == "quarantined"
    if quarantined != (record_hash is None):
        raise LedgerFormatError("record_hash is required for committed and duplicate rows, absent for quarantined")
    if quarantined != bool(errors):
        raise LedgerFormatError("errors are required for quarantined rows and absent otherwise")
    if quarantined != (cells is not None):
        raise LedgerFormatError("cells are kept for quarantined rows only")
    value: dict[str, object] = {
        "v": FORMAT_VERSION,
        "type": "row_outcome",
        "row": row,
        "outcome": outcome,
        "record_hash": record_hash,
        "errors": [{"field": f, "rule": r} for f, r in errors],
    }
    if cells is not None:
        value["cells"] = list(cells)
    return encode(value)
