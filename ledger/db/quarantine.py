"""Quarantine items and their review entries: the queries, all set-based.

An item is a quarantined row of a finished, non-dry-run import. Its status and reason are
never stored as mutable state: they are those of its latest row in ``quarantine_reviews``
(one row per review entry, append-only), or ``open`` with the reason implied by the import's
errors when nobody has acted on it yet.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from ledger.core.errors import LedgerFormatError
from ledger.core.review import parse_review
from ledger.db import projection
from ledger.db.pool import Conn, Executor

__all__ = [
    "AssetHead",
    "Counts",
    "ItemFilter",
    "ItemKey",
    "ItemRow",
    "NewCorrection",
    "NewReview",
    "accounting",
    "count_items",
    "counts",
    "history",
    "index_leaves",
    "insert_corrections",
    "insert_reviews",
    "item_states",
    "iter_items",
    "latest_assets",
    "list_items",
    "open_by_reason",
    "set_lock_timeout",
]


class ItemKey(msgspec.Struct, frozen=True, order=True):
    import_id: uuid.UUID
    row: int


class ItemFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: str | None = None
    reason: str | None = None
    # jsonb containment over the row's errors: [{"rule": R, "field": F}] (either may be absent).
    errors_contain: list[dict[str, str]] | None = None
    labs: tuple[str, ...] | None = None  # None: every lab
    grant_code: str | None = None
    # Normalised header spellings that name the grant_code column in any loaded policy.
    grant_headers: tuple[str, ...] = ("grant_code",)
    task_id: uuid.UUID | None = None


class ItemRow(msgspec.Struct, frozen=True, kw_only=True):
    import_id: uuid.UUID
    row: int
    lab: str
    filename: str | None
    header: list[str]
    cells: list[str]
    errors: list[dict[str, str]]
    quarantined_at: datetime
    policy_name: str
    policy_version: str
    policy_sha256: str
    manifest_sha256: str
    receipt_seq: int | None
    status: str
    reason: str
    last_action: str | None
    last_acted_at: datetime | None
    # The latest review entry's bytes (to replay a failed correction), if any.
    last_record: bytes | None = None

    @property
    def key(self) -> ItemKey:
        return ItemKey(self.import_id, self.row)


# The reason an import gave an item, from the rule its row broke: the key's own rules (each
# the only error of its row: ledger.db.import_decisions.QUARANTINED) are reasons of their own,
# every other rule a schema violation. Being the only error, a key rule is the first one:
# reading that replaced a containment test per key rule, which cost 7 ms per 10,000 items.
_KEY_RULES = ("other_lab", "duplicate_key_in_manifest")
_IMPORT_REASON = (
    "CASE r.errors -> 0 ->> 'rule' "
    + " ".join(f"WHEN '{rule}' THEN '{rule}'" for rule in _KEY_RULES)
    + " ELSE 'schema_violation' END"
)

# Every item matching $1..$7; $1 status, $2 reason, $3 errors containment, $4 labs,
# $5 grant_code, $6 grant_code header spellings, $7 task_id. ``matching`` is narrow (what the
# filters, the order and the counts read); a statement joins ``imp`` and import_rows (_WIDE)
# for the columns it shows, so that a page sorts keys and fetches its rows' cells alone.
_ITEMS = rf"""
WITH imp AS MATERIALIZED (
    -- The grant_code column's position is found once per import, not once per row.
    SELECT i.id, i.lab, i.filename, i.header, i.finished_at, i.policy_name, i.policy_version,
           i.policy_sha256, i.manifest_sha256,
           CASE WHEN $5::text IS NOT NULL THEN (
               SELECT (h.ord - 1)::int
               FROM jsonb_array_elements_text(i.header) WITH ORDINALITY h(name, ord)
               WHERE regexp_replace(lower(btrim(replace(h.name, U&'\FEFF', ''))), '[\s.-]+', '_', 'g')
                     = ANY($6::text[])
               LIMIT 1) END AS grant_pos
    FROM imports i
    WHERE NOT i.dry_run AND i.status = 'done'
      AND ($4::text[] IS NULL OR i.lab = ANY($4::text[]))
      AND ($7::uuid IS NULL OR i.id = $7::uuid)
), latest AS (
    -- Each reviewed item's latest entry, joined to the rows as a set rather than looked up row
    -- by row (a lookup per item took 11 of the 15 ms of counting 10,000 items).
    SELECT DISTINCT ON (q.import_id, q.row_no) q.import_id, q.row_no, q.status, q.reason, q.action, q.acted_at
    FROM quarantine_reviews q
    WHERE q.import_id IN (SELECT id FROM imp)
    ORDER BY q.import_id, q.row_no, q.batch_seq DESC, q.idx DESC
), items AS (
    SELECT r.import_id, r.row_no, r.errors, imp.finished_at AS quarantined_at,
           coalesce(l.status, 'open') AS status,
           coalesce(l.reason, {_IMPORT_REASON}) AS reason,
           l.action AS last_action, l.acted_at AS last_acted_at
    FROM imp
    JOIN import_rows r ON r.import_id = imp.id AND r.outcome = 'quarantined'
    LEFT JOIN latest l ON l.import_id = r.import_id AND l.row_no = r.row_no
    WHERE ($3::jsonb IS NULL OR r.errors @> $3::jsonb)
      AND ($5::text IS NULL OR upper(btrim(r.cells ->> imp.grant_pos)) = upper(btrim($5::text)))
), matching AS (
    SELECT * FROM items
    WHERE ($1::text IS NULL OR status = $1::text) AND ($2::text IS NULL OR reason = $2::text)
)
"""

_ITEM_COLUMNS = """
    m.import_id, m.row_no, imp.lab, imp.filename, imp.header, r.cells, r.errors, m.quarantined_at,
    imp.policy_name, imp.policy_version, imp.policy_sha256, imp.manifest_sha256, m.status, m.reason,
    m.last_action, m.last_acted_at,
    (SELECT max(b.seq) FROM ledger_batches b WHERE b.import_id = m.import_id AND b.kind = 'receipt') AS receipt_seq
"""
# What a page sorts: its keys and the columns computed per item, not the row's cells or errors.
_PAGE_COLUMNS = "m.import_id, m.row_no, m.quarantined_at, m.status, m.reason, m.last_action, m.last_acted_at"
_WIDE = "JOIN imp ON imp.id = m.import_id JOIN import_rows r ON r.import_id = m.import_id AND r.row_no = m.row_no"

# Statements over the whole queue are catch-alls ("$n IS NULL OR ..."): a generic plan, which
# PostgreSQL switches a prepared statement to after its fifth run, keeps every filter not given
# and was measured 4-6 times slower than a plan made for the call's values (80 ms against 15 ms
# for 10,000 items); and their set-returning functions' row estimates push their cost past
# jit_above_cost, where compiling (about 30 ms) costs more than the statement.
_PLAN_PER_CALL = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL jit = off"


@contextlib.asynccontextmanager
async def _planned_per_call(executor: Executor) -> AsyncIterator[Conn]:
    """A connection whose transaction plans the queue's statements for each call's values."""
    if isinstance(executor, asyncpg.Pool):
        async with executor.acquire() as conn, conn.transaction(readonly=True):
            await conn.execute(_PLAN_PER_CALL)
            yield conn
    elif executor.is_in_transaction():
        await executor.execute(_PLAN_PER_CALL)
        yield executor
    else:
        async with executor.transaction(readonly=True):
            await executor.execute(_PLAN_PER_CALL)
            yield executor


def _params(flt: ItemFilter) -> list[Any]:
    return [
        flt.status,
        flt.reason,
        flt.errors_contain,
        None if flt.labs is None else list(flt.labs),
        flt.grant_code,
        list(flt.grant_headers),
        flt.task_id,
    ]


def _item(r: Any, last_record: bytes | None = None) -> ItemRow:
    return ItemRow(
        import_id=r["import_id"],
        row=r["row_no"],
        lab=r["lab"],
        filename=r["filename"],
        header=list(r["header"] or []),
        cells=list(r["cells"] or []),
        errors=list(r["errors"] or []),
        quarantined_at=r["quarantined_at"],
        policy_name=r["policy_name"],
        policy_version=r["policy_version"],
        policy_sha256=r["policy_sha256"],
        manifest_sha256=r["manifest_sha256"],
        receipt_seq=r["receipt_seq"],
        status=r["status"],
        reason=r["reason"],
        last_action=r["last_action"],
        last_acted_at=r["last_acted_at"],
        last_record=last_record,
    )


# Newest first: by the time the import quarantined them, then the import, then row order.
_ORDER = "ORDER BY m.quarantined_at DESC, m.import_id DESC, m.row_no"
_AFTER = """
    $8::timestamptz IS NULL
    OR (m.quarantined_at, m.import_id) < ($8::timestamptz, $9::uuid)
    OR ((m.quarantined_at, m.import_id) = ($8::timestamptz, $9::uuid) AND m.row_no > $10::bigint)
"""
# The same order backwards, from the key before which a page ends.
_BEFORE = """
    (m.quarantined_at, m.import_id) > ($8::timestamptz, $9::uuid)
    OR ((m.quarantined_at, m.import_id) = ($8::timestamptz, $9::uuid) AND m.row_no < $10::bigint)
"""
_REVERSED = "ORDER BY m.quarantined_at, m.import_id, m.row_no DESC"


async def list_items(
    conn: Executor,
    flt: ItemFilter,
    *,
    after: tuple[datetime, uuid.UUID, int] | None,
    limit: int,
    before: tuple[datetime, uuid.UUID, int] | None = None,
) -> list[ItemRow]:
    """``limit`` items in the queue's order: the first, those after ``after``, or (``before``)
    the last of those before it."""
    bound = before if before is not None else after
    where, order = (_BEFORE, _REVERSED) if before is not None else (_AFTER, _ORDER)
    async with _planned_per_call(conn) as planned:
        rows = await planned.fetch(
            _ITEMS
            + f"""
            , page AS (SELECT {_PAGE_COLUMNS} FROM matching m WHERE {where} {order} LIMIT $11)
            SELECT {_ITEM_COLUMNS} FROM page m {_WIDE} {order}
            """,
            *_params(flt),
            None if bound is None else bound[0],
            None if bound is None else bound[1],
            None if bound is None else bound[2],
            limit,
        )
    items = [_item(r) for r in rows]
    return items[::-1] if before is not None else items


async def iter_items(conn: Conn, flt: ItemFilter) -> AsyncIterator[ItemRow]:
    """Every matching item, newest first, streamed through a cursor (call inside a transaction)."""
    async with _planned_per_call(conn) as planned:
        cursor = planned.cursor(
            _ITEMS + f"SELECT {_ITEM_COLUMNS} FROM matching m {_WIDE} {_ORDER}", *_params(flt), prefetch=500
        )
        async for r in cursor:
            yield _item(r)


async def count_items(conn: Executor, flt: ItemFilter) -> int:
    async with _planned_per_call(conn) as planned:
        return int(await planned.fetchval(_ITEMS + "SELECT count(*) FROM matching", *_params(flt)))


async def open_by_reason(conn: Executor) -> list[tuple[str, int, float]]:
    """(reason, open items, seconds since the oldest of them was quarantined) per reason: the
    queue's own item semantics, counted as a set (GET /metrics)."""
    async with _planned_per_call(conn) as planned:
        rows = await planned.fetch(
            _ITEMS
            + """SELECT reason, count(*) AS n, extract(epoch FROM now() - min(quarantined_at))::float8 AS oldest
                 FROM matching GROUP BY reason""",
            *_params(ItemFilter(status="open")),
        )
    return [(str(r["reason"]), int(r["n"]), float(r["oldest"])) for r in rows]


class Counts(msgspec.Struct, frozen=True):
    """The items a filter matches, and how many break each rule and each field (an item counts
    once per rule and once per field however many of its cells break it)."""

    matching: int
    rules: dict[str, int]
    fields: dict[str, int]


# The items grouped by which rules and which fields their errors name (few distinct groups
# however many items), each group's distinct rules and fields counted once per item of it:
# expanding every item's errors instead took 60 of the 75 ms for 10,000 items. $8: the errors
# an item must contain to count as matching (the rules and fields are counted without it).
_COUNTS = """
, groups AS (
    SELECT jsonb_path_query_array(m.errors, '$[*].rule') AS rules,
           jsonb_path_query_array(m.errors, '$[*].field') AS fields,
           count(*) FILTER (WHERE $8::jsonb IS NULL OR m.errors @> $8::jsonb) AS chosen,
           count(*) AS n
    FROM matching m
    GROUP BY 1, 2
)
SELECT c.kind, c.name, sum(c.n)::bigint AS n FROM groups g
CROSS JOIN LATERAL (
    SELECT 'item' AS kind, '' AS name, g.chosen AS n
    UNION ALL
    SELECT DISTINCT 'rule', jsonb_array_elements_text(g.rules), g.n
    UNION ALL
    SELECT DISTINCT 'field', jsonb_array_elements_text(g.fields), g.n
) c
GROUP BY c.kind, c.name
ORDER BY n DESC, c.name
"""


async def counts(conn: Executor, flt: ItemFilter, *, choosing: bool = False) -> Counts:
    """The matching items and the facets of the queue, in one statement. ``choosing``: the rules
    and fields are counted without the filter's own rule and field (its errors containment),
    as a choice of another rule or field would match; ``matching`` is still the whole filter's."""
    counted = msgspec.structs.replace(flt, errors_contain=None) if choosing else flt
    async with _planned_per_call(conn) as planned:
        rows = await planned.fetch(_ITEMS + _COUNTS, *_params(counted), flt.errors_contain if choosing else None)
    by_kind: dict[str, dict[str, int]] = {"item": {}, "rule": {}, "field": {}}
    for r in rows:
        by_kind[r["kind"]][r["name"]] = r["n"]
    return Counts(matching=by_kind["item"].get("", 0), rules=by_kind["rule"], fields=by_kind["field"])


_STATES = f"""
SELECT k.ord, r.import_id, r.row_no, i.lab, i.filename, i.header, r.cells, r.errors,
       i.finished_at AS quarantined_at, i.policy_name, i.policy_version, i.policy_sha256, i.manifest_sha256,
       coalesce(l.status, 'open') AS status,
       coalesce(l.reason, {_IMPORT_REASON}) AS reason,
       l.action AS last_action, l.acted_at AS last_acted_at, l.record AS last_record,
       (SELECT max(b.seq) FROM ledger_batches b WHERE b.import_id = r.import_id AND b.kind = 'receipt')
           AS receipt_seq
FROM unnest($1::uuid[], $2::bigint[]) WITH ORDINALITY k(import_id, row_no, ord)
JOIN import_rows r ON r.import_id = k.import_id AND r.row_no = k.row_no AND r.outcome = 'quarantined'
JOIN imports i ON i.id = r.import_id AND NOT i.dry_run AND i.status = 'done'
LEFT JOIN LATERAL (
    SELECT q.status, q.reason, q.action, q.acted_at, e.record FROM quarantine_reviews q
    JOIN ledger_entries e ON e.batch_seq = q.batch_seq AND e.idx = q.idx
    WHERE q.import_id = r.import_id AND q.row_no = r.row_no
    ORDER BY q.batch_seq DESC, q.idx DESC LIMIT 1
) l ON true
ORDER BY k.ord
"""


async def item_states(conn: Executor, keys: Sequence[ItemKey]) -> dict[ItemKey, ItemRow]:
    """The current state of each of ``keys`` that is a reviewable item, in one statement."""
    rows = await conn.fetch(_STATES, [k.import_id for k in keys], [k.row for k in keys])
    return {
        ItemKey(r["import_id"], r["row_no"]): _item(r, None if r["last_record"] is None else bytes(r["last_record"]))
        for r in rows
    }


class AssetHead(msgspec.Struct, frozen=True):
    revision: int
    leaf_hash: bytes
    batch_seq: int
    # The lab the key belongs to: that of its latest revision.
    lab: str


async def latest_assets(conn: Conn, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], AssetHead]:
    rows = await conn.fetch(
        """
        SELECT k.asset_id, k.grant_code, a.revision, a.leaf_hash, a.batch_seq, i.lab
        FROM unnest($1::text[], $2::text[]) k(asset_id, grant_code)
        -- The ledger itself, not the projection, which may not have applied the latest commit.
        CROSS JOIN LATERAL (
            SELECT e.revision, e.leaf_hash, e.batch_seq, e.import_id FROM ledger_entries e
            WHERE e.asset_id = k.asset_id AND e.grant_code = k.grant_code AND e.kind = 'asset'
            ORDER BY e.revision DESC LIMIT 1
        ) a
        -- Every asset entry names its import (a correction, its item's), whose lab is the record's.
        JOIN imports i ON i.id = a.import_id
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {
        (r["asset_id"], r["grant_code"]): AssetHead(r["revision"], bytes(r["leaf_hash"]), r["batch_seq"], r["lab"])
        for r in rows
    }


class NewCorrection(msgspec.Struct, frozen=True, kw_only=True):
    batch_seq: int
    idx: int
    record: bytes
    leaf_hash: bytes
    asset_id: str
    grant_code: str
    revision: int
    item: ItemKey


class NewReview(msgspec.Struct, frozen=True, kw_only=True):
    batch_seq: int
    idx: int
    record: bytes
    leaf_hash: bytes
    item: ItemKey
    action: str
    status: str
    reason: str
    actor: uuid.UUID
    record_hash: bytes | None


async def set_lock_timeout(conn: Conn, milliseconds: int) -> None:
    # SET LOCAL takes no parameters; the value is an int we control.
    await conn.execute(f"SET LOCAL lock_timeout = {int(milliseconds)}")


async def insert_corrections(conn: Conn, corrections: Sequence[NewCorrection], now: datetime) -> None:
    """Correction entries and the asset projection, in one statement for the whole set."""
    if not corrections:
        return
    await conn.execute(
        """
        WITH ins AS (
            INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, asset_id, grant_code,
                                        revision, import_id, row_no)
            SELECT u.batch_seq, u.idx, 'asset', u.record, u.leaf_hash, u.asset_id, u.grant_code,
                   u.revision, u.import_id, u.row_no
            FROM unnest($1::bigint[], $2::int[], $3::bytea[], $4::bytea[], $5::text[], $6::text[],
                        $7::int[], $8::uuid[], $9::bigint[])
                 u(batch_seq, idx, record, leaf_hash, asset_id, grant_code, revision, import_id, row_no)
            RETURNING id, batch_seq, asset_id, grant_code, revision, leaf_hash, record
        )
        INSERT INTO assets (asset_id, grant_code, lab, category, location, revision, entry_id, batch_seq,
                            leaf_hash, data, updated_at)
        SELECT ins.asset_id, ins.grant_code, r.rec ->> 'lab', r.rec -> 'data' ->> 'category',
               r.rec -> 'data' ->> 'location', ins.revision, ins.id, ins.batch_seq, ins.leaf_hash,
               r.rec -> 'data', $10
        FROM ins CROSS JOIN LATERAL (SELECT convert_from(ins.record, 'UTF8')::jsonb AS rec OFFSET 0) r
        """  # OFFSET 0: each record parsed once (ledger.db.projection says why)
        + projection.ASSETS_UPSERT,
        [c.batch_seq for c in corrections],
        [c.idx for c in corrections],
        [c.record for c in corrections],
        [c.leaf_hash for c in corrections],
        [c.asset_id for c in corrections],
        [c.grant_code for c in corrections],
        [c.revision for c in corrections],
        [c.item.import_id for c in corrections],
        [c.item.row for c in corrections],
        now,
    )


async def insert_reviews(conn: Conn, reviews: Sequence[NewReview], now: datetime) -> None:
    """Review entries and their index rows: two statements for the whole set."""
    if not reviews:
        return
    await conn.execute(
        """
        INSERT INTO ledger_entries (batch_seq, idx, kind, record, leaf_hash, import_id, row_no)
        SELECT u.batch_seq, u.idx, 'review', u.record, u.leaf_hash, u.import_id, u.row_no
        FROM unnest($1::bigint[], $2::int[], $3::bytea[], $4::bytea[], $5::uuid[], $6::bigint[])
             u(batch_seq, idx, record, leaf_hash, import_id, row_no)
        """,
        [r.batch_seq for r in reviews],
        [r.idx for r in reviews],
        [r.record for r in reviews],
        [r.leaf_hash for r in reviews],
        [r.item.import_id for r in reviews],
        [r.item.row for r in reviews],
    )
    await conn.execute(
        """
        INSERT INTO quarantine_reviews (batch_seq, idx, import_id, row_no, action, status, reason, actor,
                                        acted_at, record_hash, leaf_hash)
        SELECT u.batch_seq, u.idx, u.import_id, u.row_no, u.action, u.status, u.reason, $8, $9,
               u.record_hash, u.leaf_hash
        FROM unnest($1::bigint[], $2::int[], $3::uuid[], $4::bigint[], $5::text[], $6::text[], $7::text[],
                    $10::bytea[], $11::bytea[])
             u(batch_seq, idx, import_id, row_no, action, status, reason, record_hash, leaf_hash)
        """,
        [r.batch_seq for r in reviews],
        [r.idx for r in reviews],
        [r.item.import_id for r in reviews],
        [r.item.row for r in reviews],
        [r.action for r in reviews],
        [r.status for r in reviews],
        [r.reason for r in reviews],
        reviews[0].actor,
        now,
        [r.record_hash for r in reviews],
        [r.leaf_hash for r in reviews],
    )


async def history(conn: Executor, key: ItemKey) -> list[tuple[int, int, bytes]]:
    """(batch_seq, idx, record bytes) of every review entry on the item, oldest first."""
    rows = await conn.fetch(
        """
        SELECT q.batch_seq, q.idx, e.record FROM quarantine_reviews q
        JOIN ledger_entries e ON e.batch_seq = q.batch_seq AND e.idx = q.idx
        WHERE q.import_id = $1 AND q.row_no = $2
        ORDER BY q.batch_seq, q.idx
        """,
        key.import_id,
        key.row,
    )
    return [(r["batch_seq"], r["idx"], bytes(r["record"])) for r in rows]


async def accounting(conn: Executor, import_id: uuid.UUID) -> dict[str, Any] | None:
    """Every row of one import by final disposition, in one statement."""
    row = await conn.fetchrow(
        """
        SELECT count(r.row_no) AS total,
               count(*) FILTER (WHERE r.outcome = 'committed') AS committed,
               count(*) FILTER (WHERE r.outcome = 'duplicate') AS duplicate,
               count(*) FILTER (WHERE r.outcome = 'quarantined') AS quarantined,
               count(*) FILTER (WHERE r.outcome = 'quarantined' AND coalesce(l.status, 'open') = 'open') AS open,
               count(*) FILTER (WHERE l.status = 'open' AND l.reason = 'conflict') AS open_conflict,
               count(*) FILTER (WHERE l.status = 'open' AND l.reason = 'transient_failure') AS open_transient,
               count(*) FILTER (WHERE l.status = 'resolved') AS resolved,
               count(*) FILTER (WHERE l.status = 'resolved' AND l.outcome = 'committed') AS resolved_committed,
               count(*) FILTER (WHERE l.status = 'resolved' AND l.outcome = 'duplicate') AS resolved_duplicate,
               count(*) FILTER (WHERE l.status = 'dismissed') AS dismissed,
               (SELECT e.record FROM ledger_batches b JOIN ledger_entries e ON e.batch_seq = b.seq
                WHERE b.import_id = $1 AND b.kind = 'receipt' ORDER BY b.seq DESC LIMIT 1) AS receipt
        FROM import_rows r
        LEFT JOIN LATERAL (
            SELECT q.status, q.reason,
                   convert_from(e.record, 'UTF8')::jsonb -> 'correction' ->> 'outcome' AS outcome
            FROM quarantine_reviews q
            JOIN ledger_entries e ON e.batch_seq = q.batch_seq AND e.idx = q.idx
            WHERE q.import_id = r.import_id AND q.row_no = r.row_no
            ORDER BY q.batch_seq DESC, q.idx DESC LIMIT 1
        ) l ON r.outcome = 'quarantined'
        WHERE r.import_id = $1
        """,
        import_id,
    )
    return None if row is None else dict(row)


# The index disagrees with the entry it indexes: no record hashes to this, so verification
# reports the entry as not as recorded.
_INDEX_MISMATCH = b"review index disagrees with its entry"


def _index_leaf(row: Any) -> bytes:
    """The leaf hash a review entry must have according to its ``quarantine_reviews`` row.

    The row's decision columns are checked against the entry's bytes too: status queries read
    the index, so an index changed behind the ledger's back must not verify either.
    """
    if row["record"] is None:
        return _INDEX_MISMATCH
    try:
        review = parse_review(bytes(row["record"]))
    except LedgerFormatError:
        return bytes(row["leaf_hash"])  # the verifier reports the malformed entry itself
    correction = None if review.correction is None else review.correction.record_hash
    stored = None if row["record_hash"] is None else bytes(row["record_hash"]).hex()
    agrees = (
        (str(row["import_id"]), row["row_no"]) == (review.item.task_id, review.item.row)
        and (row["action"], row["status"], row["reason"]) == (review.action, review.status, review.reason)
        and str(row["actor"]) == review.actor.token_id
        and stored == correction
    )
    return bytes(row["leaf_hash"]) if agrees else _INDEX_MISMATCH


async def index_leaves(conn: Executor, batch_seq: int) -> list[bytes]:
    """What the review index says each entry of a review batch is, in index order."""
    rows = await conn.fetch(
        """
        SELECT q.import_id, q.row_no, q.action, q.status, q.reason, q.actor, q.record_hash, q.leaf_hash,
               e.record
        FROM quarantine_reviews q
        LEFT JOIN ledger_entries e ON e.batch_seq = q.batch_seq AND e.idx = q.idx
        WHERE q.batch_seq = $1 ORDER BY q.idx
        """,
        batch_seq,
    )
    return [_index_leaf(r) for r in rows]
