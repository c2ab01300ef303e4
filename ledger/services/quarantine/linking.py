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
from ledger.core.review import Actor, Correction, Transfer, review_record
from ledger.db import chain
from ledger.db import quarantine as qdb
from ledger.db.checkpoints import CheckpointSigning
from ledger.db.head import LockedHead, lock_head
from ledger.db.pool import Conn
from ledger.db.quarantine import ItemKey, ItemRow
from ledger.services.quarantine.corrections import Attempt
from ledger.services.quarantine.schemas import EntryRef

__all__ = ["Dismissal", "Outcome", "actionable", "decide", "not_open", "record_failures"]


class Dismissal(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    note: str


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    key: ItemKey
    result: str
    status: str
    reason: str
    outcome: str | None = None
    record_hash: str | None = None
    entry: EntryRef | None = None
    item: ItemRow | None = None  # the current state, when the item was not acted on
    # Where the decision is on the ledger, for the audit log: the item's lab, the review entry's
    # leaf hash and its batch's Merkle root.
    lab: str | None = None
    entry_hash: str | None = None
    batch_hash: str | None = None


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
    lab: str


def actionable(item: ItemRow, *, requeue: bool) -> bool:
    """Open, and for a requeue open because a correction failed transiently."""
    return item.status == "open" and not (requeue and item.reason != "transient_failure")


def not_open(item: ItemRow) -> Outcome:
    return Outcome(key=item.key, result="skipped", status=item.status, reason=item.reason, item=item)


def _review_bytes(
    key: ItemKey,
    *,
    action: str,
    status: str,
    reason: str,
    actor: Actor,
    at: str,
    note: str | None,
    attempt: Attempt | None = None,
    correction: Correction | None = None,
    error: str | None = None,
    transfer: Transfer | None = None,
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
        transfer=transfer,
    )


def _new_batch(kind: str, leaves: list[bytes]) -> chain.NewBatch:
    # Corrections and reviews span manifests: their headers name no manifest and no policy
    # (each review entry names the policy that validated its correction).
    return chain.NewBatch(
        kind=kind, root=root(leaves), records=len(leaves), manifest_sha256=None, policy_sha256=None, import_id=None
    )


# ---------------------------------------------------------------- planning


def _plan_correction(
    attempt: Attempt, item: ItemRow, latest: dict[tuple[str, str], qdb.AssetHead], actor: Actor, at: str
) -> _Planned | Outcome:
    """A duplicate of the ledger's latest revision, a conflict with a revision made since the row
    was quarantined (unless superseding), or a new revision; ``latest`` learns the new one.

    An asset key belongs to the lab of its latest revision: a correction of another lab's key
    is refused (an Outcome, no entry: nothing was decided) unless it is a transfer, and a
    transfer of a key that is not another lab's is refused likewise."""
    current = latest.get(attempt.asset_key)
    other_lab = current is not None and current.lab != item.lab
    if other_lab != attempt.transfer:
        return Outcome(
            key=attempt.key,
            result="other_lab" if other_lab else "not_other_lab",
            status=item.status,
            reason=item.reason,
        )
    ledger_hash = None if current is None else current.leaf_hash.hex()
    revised_since = (
        current is not None
        and item.receipt_seq is not None
        and current.batch_seq > item.receipt_seq
        and current.leaf_hash != attempt.leaf
    )
    transfer = None
    revision = 0
    if current is not None and other_lab:
        # The officer moves the key, superseding whatever revision the other lab holds.
        outcome, status, reason, action = "committed", "resolved", item.reason, "transfer"
        transfer = Transfer(from_lab=current.lab, to_lab=item.lab)
        revision = current.revision + 1
        latest[attempt.asset_key] = qdb.AssetHead(revision, attempt.leaf, 1 << 62, item.lab)
    elif current is not None and current.leaf_hash == attempt.leaf:
        outcome, status, reason, action = "duplicate", "resolved", item.reason, attempt.action
    elif revised_since and not attempt.supersede:
        outcome, status, reason, action = "conflict", "open", "conflict", "conflict"
    else:
        outcome, status, reason, action = "committed", "resolved", item.reason, attempt.action
        revision = (0 if current is None else current.revision) + 1
        # Later attempts in this call see this revision, committed after every receipt.
        latest[attempt.asset_key] = qdb.AssetHead(revision, attempt.leaf, 1 << 62, item.lab)
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
        transfer=transfer,
    )
    return _Planned(
        key=attempt.key,
        record=record,
        action=action,
        status=status,
        reason=reason,
        result="resolved" if status == "resolved" else outcome,
        correction=attempt.record if outcome == "committed" else None,
        asset_key=attempt.asset_key,
        revision=revision,
        outcome=outcome,
        record_hash=attempt.leaf.hex(),
        lab=item.lab,
    )


def _plan_dismissal(dismissal: Dismissal, item: ItemRow, actor: Actor, at: str) -> _Planned:
    record = _review_bytes(
        dismissal.key,
        action="dismiss",
        status="dismissed",
        reason=item.reason,
        actor=actor,
        at=at,
        note=dismissal.note,
    )
    return _Planned(
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
        lab=item.lab,
    )


def _plan_failure(attempt: Attempt, item: ItemRow, actor: Actor, at: str, code: str) -> _Planned:
    """The attempt recorded as failed, values included, so that a requeue can replay it."""
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
    return _Planned(
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
        lab=item.lab,
    )


# ---------------------------------------------------------------- deciding


async def decide(
    conn: Conn,
    actor: Actor,
    principal_id: uuid.UUID,
    attempts: Sequence[Attempt],
    dismissals: Sequence[Dismissal],
    *,
    requeue: bool,
    batch_rows_max: int,
    lock_timeout_ms: int,
    signing: CheckpointSigning | None = None,
) -> list[Outcome]:
    """One transaction: lock the head, re-read every item, decide, link and insert."""
    outcomes: list[Outcome] = []
    async with conn.transaction():
        await qdb.set_lock_timeout(conn, lock_timeout_ms)
        head = await lock_head(conn)
        keys = [a.key for a in attempts] + [d.key for d in dismissals]
        states = await qdb.item_states(conn, keys)
        latest = await qdb.latest_assets(conn, sorted({a.asset_key for a in attempts}))
        now = datetime.now(UTC)
        at = format_time(now)
        planned: list[_Planned] = []
        for attempt in attempts:
            item = states[attempt.key]
            if actionable(item, requeue=requeue):
                plan = _plan_correction(attempt, item, latest, actor, at)
                if isinstance(plan, Outcome):
                    outcomes.append(plan)
                else:
                    planned.append(plan)
            else:
                outcomes.append(not_open(item))
        for dismissal in dismissals:
            item = states[dismissal.key]
            if actionable(item, requeue=False):
                planned.append(_plan_dismissal(dismissal, item, actor, at))
            else:
                outcomes.append(not_open(item))
        if planned:
            outcomes += await _link(conn, head, planned, principal_id, batch_rows_max, now, signing)
    return outcomes


async def record_failures(
    conn: Conn,
    actor: Actor,
    principal_id: uuid.UUID,
    attempts: Sequence[Attempt],
    code: str,
    batch_rows_max: int,
    signing: CheckpointSigning | None = None,
) -> list[Outcome]:
    """One transaction: record each still-open attempt as failed, with its values, for a requeue."""
    outcomes: list[Outcome] = []
    async with conn.transaction():
        head = await lock_head(conn)
        states = await qdb.item_states(conn, [a.key for a in attempts])
        now = datetime.now(UTC)
        at = format_time(now)
        planned: list[_Planned] = []
        for attempt in attempts:
            item = states[attempt.key]
            if actionable(item, requeue=False):
                planned.append(_plan_failure(attempt, item, actor, at, code))
            else:
                outcomes.append(not_open(item))
        if planned:
            outcomes += await _link(conn, head, planned, principal_id, batch_rows_max, now, signing)
    return outcomes


# ---------------------------------------------------------------- linking


async def _link(
    conn: Conn,
    head: LockedHead,
    planned: Sequence[_Planned],
    principal_id: uuid.UUID,
    batch_rows_max: int,
    now: datetime,
    signing: CheckpointSigning | None,
) -> list[Outcome]:
    """Link planned decisions onto the chain and insert them, in the caller's transaction.

    Each chunk: its corrections (an assets batch without manifest), then the review batch that
    accounts for them. Review entries are in the same order as the corrections.
    """
    outcomes: list[Outcome] = []
    batches: list[chain.NewBatch] = []
    corrections: list[qdb.NewCorrection] = []
    reviews: list[qdb.NewReview] = []
    seq = head.seq
    for start in range(0, len(planned), batch_rows_max):
        chunk = planned[start : start + batch_rows_max]
        committed = [p for p in chunk if p.correction is not None]
        if committed:
            seq += 1
            batch, rows = _corrections_batch(seq, committed)
            batches.append(batch)
            corrections += rows
        seq += 1
        batch, entries, told = _reviews_batch(seq, chunk, principal_id)
        batches.append(batch)
        reviews += entries
        outcomes += told
    head = await chain.append_batches(conn, head, batches, now)
    assert head.seq == seq
    await qdb.insert_corrections(conn, corrections, now)
    await qdb.insert_reviews(conn, reviews, now)
    await chain.advance_head(conn, head, signing)
    return outcomes


def _corrections_batch(seq: int, committed: Sequence[_Planned]) -> tuple[chain.NewBatch, list[qdb.NewCorrection]]:
    leaves = []
    rows = []
    for idx, p in enumerate(committed):
        assert p.correction is not None and p.asset_key is not None
        leaf = leaf_hash(p.correction)
        leaves.append(leaf)
        rows.append(
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
    return _new_batch("assets", leaves), rows


def _reviews_batch(
    seq: int, chunk: Sequence[_Planned], principal_id: uuid.UUID
) -> tuple[chain.NewBatch, list[qdb.NewReview], list[Outcome]]:
    leaves = []
    rows = []
    for idx, p in enumerate(chunk):
        leaf = leaf_hash(p.record)
        leaves.append(leaf)
        rows.append(
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
    batch = _new_batch("review", leaves)
    outcomes = [
        Outcome(
            key=p.key,
            result=p.result,
            status=p.status,
            reason=p.reason,
            outcome=p.outcome,
            record_hash=p.record_hash,
            entry=EntryRef(seq, idx),
            lab=p.lab,
            entry_hash=leaf.hex(),
            batch_hash=batch.root.hex(),
        )
        for idx, (p, leaf) in enumerate(zip(chunk, leaves, strict=True))
    ]
    return batch, rows, outcomes
