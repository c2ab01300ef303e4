"""Row outcomes as stored (``import_rows``), turned back into their canonical bytes
(ledger.core.outcomes), and the SQL the commit path formats them with.

The final transaction hashes accepted outcomes inside PostgreSQL (no per-row Python under
the head lock): ``accepted_leaf_sql`` is outcomes.ACCEPTED_TEMPLATE rendered as a
``format()`` call, so the SQL and Python spellings cannot drift apart; tests/api/
test_proofs.py runs it against the Python encoder.
"""

from __future__ import annotations

import binascii
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
from asyncpg.cursor import CursorFactory

from ledger.core.errors import LedgerError
from ledger.core.hashing import LEAF_PREFIX
from ledger.core.outcomes import ACCEPTED, ACCEPTED_TEMPLATE, row_outcome
from ledger.db.pool import Conn

__all__ = [
    "IMPORT_OUTCOMES",
    "OUTCOME_COLUMNS",
    "accepted_leaf_sql",
    "import_outcome_rows",
    "stored_outcome",
    "stored_outcomes",
]

OUTCOME_COLUMNS = "row_no, outcome, record_hash, errors, cells"
# One import's outcomes in row order, the order of the receipt's outcomes_root.
IMPORT_OUTCOMES = f"SELECT {OUTCOME_COLUMNS} FROM import_rows WHERE import_id = $1 ORDER BY row_no"

_ACCEPTED_WORDS = {word: word.encode() for word in ACCEPTED}


def import_outcome_rows(conn: Conn, import_id: uuid.UUID, *, prefetch: int) -> CursorFactory[asyncpg.Record]:
    """A cursor (iterate it inside a transaction) over one import's rows of ``OUTCOME_COLUMNS``
    in row order (``stored_outcome`` turns each into its bytes)."""
    return conn.cursor(IMPORT_OUTCOMES, import_id, prefetch=prefetch)


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def accepted_leaf_sql(outcome: str, record_hash: str, row: str) -> str:
    """The SQL expression of an accepted outcome's leaf hash, given SQL expressions of its
    outcome word (text), record hash (bytea) and row number (integer)."""
    # format()'s %s takes any type; a literal % is %% in both languages.
    template = _sql_text(ACCEPTED_TEMPLATE.decode().replace("%d", "%s"))
    text = f"format({template}, {outcome}, encode({record_hash}, 'hex'), {row})"
    prefix = _sql_text("\\x" + LEAF_PREFIX.hex())
    return f"sha256({prefix}::bytea || convert_to({text}, 'UTF8'))"


def stored_outcome(row: asyncpg.Record | Sequence[Any]) -> bytes:
    """The canonical row_outcome bytes of one row of ``OUTCOME_COLUMNS``.

    A stored row that no longer forms a valid outcome (tampered with) yields bytes that are
    not canonical JSON, so it cannot hash to the receipt's root and verification reports it.
    """
    row_no, outcome, record_hash, errors, cells = row[0], row[1], row[2], row[3], row[4]
    try:
        return row_outcome(
            row=int(row_no),
            outcome=outcome,
            record_hash=None if record_hash is None else bytes(record_hash).hex(),
            errors=[(e["field"], e["rule"]) for e in errors or ()],
            cells=cells if outcome == "quarantined" else None,
        )
    except (LedgerError, KeyError, TypeError) as exc:
        return b"\xffmalformed row outcome " + repr((row_no, str(exc))).encode()


def stored_outcomes(rows: Sequence[asyncpg.Record | Sequence[Any]]) -> tuple[list[bytes], list[bytes]]:
    """One import's rows of ``OUTCOME_COLUMNS`` in row order: the committed rows' record
    hashes (an empty one for a committed row without) and every row's outcome bytes."""
    # One pass, every row unpacked once: this runs for every row of every manifest.
    # Accepted rows (nearly all) go through the canonical template directly; anything
    # else, including a tampered row, through the general encoder.
    tpl, accepted, hexlify = ACCEPTED_TEMPLATE, _ACCEPTED_WORDS, binascii.hexlify
    committed: list[bytes] = []
    outcomes: list[bytes] = []
    for row in rows:
        row_no, outcome, record_hash, errors, _ = row
        if outcome == "committed":
            committed.append(b"" if record_hash is None else record_hash)
        word = accepted.get(outcome)
        if word is not None and not errors and record_hash is not None and len(record_hash) == 32:
            outcomes.append(tpl % (word, hexlify(record_hash), row_no))
        else:
            outcomes.append(stored_outcome(row))
    return committed, outcomes
