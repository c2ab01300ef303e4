"""Deciding under the head lock: re-read every item, plan its review entry (and correction), and
link them onto the chain in batches, with a constant number of statements for the whole set."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from ledger.core.hashing import leaf_hash
from ledger.core.merkle import root
from ledger.core.records import format_time
from ledger.core.review import Actor, Correction, review_record
from ledger.db import chain
from ledger.db import quarantine as qdb
from ledger.db.pool import Conn
from ledger.db.quarantine import ItemKey, ItemRow
from ledger.services.quarantine.corrections import _Attempt
from ledger.services.quarantine.reading import _item_key
from ledger.services.quarantine.schemas import EntryRef

__all__: list[str] = []


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


class _Planned(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    record: bytes
    action: str
    status: str
    reason: str
    result: str  # what the caller is told: resolved | dismissed | conflict | transient_failure
    correction: bytes | None  # the asset record to commit with it, if any
    asset_key: tuple[str, str] | None
    revision: int
    outcome: str | None
    record_hash: str | None


def _actionable(item: ItemRow, *, requeue: bool) -> bool:
    """Open, and for a requeue open because a correction failed transiently."""
    return item.status == "open" and not (requeue and item.reason != "transient_failure")


def _not_open(item: ItemRow) -> _Outcome:
    return _Outcome(key=_item_key(item), result="skipped", status=item.status, reason=item.reason, item=item)


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


def _new_batch(kind: str, leaves: list[bytes]) -> chain.NewBatch:
    # Corrections and reviews span manifests: their headers name no manifest and no policy
    # (each review entry names the policy that validated its correction).
    return chain.NewBatch(
        kind=kind, root=root(leaves), records=len(leaves), manifest_sha256=None, policy_sha256=None, import_id=None
    )


async def _decide(
    conn: Conn,
    actor: Actor,
    principal_id: uuid.UUID,
    attempts: Sequence[_Attempt],
    dismissals: Sequence[_Dismissal],
    *,
    requeue: bool,
    batch_rows_max: int,
    lock_timeout_ms: int,
) -> list[_Outcome]:
    """One transaction: lock the head, re-read every item, decide, link and insert."""
    outcomes: list[_Outcome] = []
    async with conn.transaction():
        await qdb.set_lock_timeout(conn, lock_timeout_ms)
        head = await chain.lock_head(conn)
        keys = [a.key for a in attempts] + [d.key for d in dismissals]
        states = await qdb.item_states(conn, keys)
        latest = await qdb.latest_assets(conn, sorted({a.asset_key for a in attempts}))
        now = datetime.now(UTC)
        at = format_time(now)
        planned: list[_Planned] = []
        for attempt in attempts:
            item = states[attempt.key]
            if not _actionable(item, requeue=requeue):
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
                    result="resolved" if status == "resolved" else outcome,
                    correction=attempt.record if outcome == "committed" else None,
                    asset_key=attempt.asset_key,
                    revision=latest[attempt.asset_key].revision if outcome == "committed" else 0,
                    outcome=outcome,
                    record_hash=attempt.leaf.hex(),
                )
            )
        for dismissal in dismissals:
            item = states[dismissal.key]
            if not _actionable(item, requeue=False):
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
                    result="dismissed",
                    correction=None,
                    asset_key=None,
                    revision=0,
                    outcome=None,
                    record_hash=None,
                )
            )
        if planned:
            outcomes += await _link(conn, head, planned, principal_id, batch_rows_max, now)
    return outcomes


async def _record_failures(
    conn: Conn,
    actor: Actor,
    principal_id: uuid.UUID,
    attempts: Sequence[_Attempt],
    code: str,
    batch_rows_max: int,
) -> list[_Outcome]:
    """One transaction: record each still-open attempt as failed, with its values, for a requeue."""
    outcomes: list[_Outcome] = []
    async with conn.transaction():
        head = await chain.lock_head(conn)
        states = await qdb.item_states(conn, [a.key for a in attempts])
        now = datetime.now(UTC)
        at = format_time(now)
        planned: list[_Planned] = []
        for attempt in attempts:
            item = states[attempt.key]
            if not _actionable(item, requeue=False):
                outcomes.append(_not_open(item))
                continue
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
            planned.append(
                _Planned(
                    key=attempt.key,
                    record=record,
                    action="failed",
                    status="open",
                    reason="transient_failure",
                    result="transient_failure",
                    correction=None,
                    asset_key=None,
                    revision=0,
                    outcome="failed",
                    record_hash=attempt.leaf.hex(),
                )
            )
        if planned:
            outcomes += await _link(conn, head, planned, principal_id, batch_rows_max, now)
    return outcomes


async def _link(
    conn: Conn,
    head: chain.Head,
    planned: Sequence[_Planned],
    principal_id: uuid.UUID,
    batch_rows_max: int,
    now: datetime,
) -> list[_Outcome]:
    """Link planned decisions onto the chain and insert them, in the caller's transaction.

    Each chunk: its corrections (an assets batch without manifest), then the review batch that
    accounts for them. Review entries are in the same order as the corrections.
    """
    outcomes: list[_Outcome] = []
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
                    actor=principal_id,
                    record_hash=None if p.record_hash is None else bytes.fromhex(p.record_hash),
                )
            )
            outcomes.append(
                _Outcome(
                    key=p.key,
                    result=p.result,
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
