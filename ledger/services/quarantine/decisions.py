"""Acting on the queue: resubmit a correction, dismiss, dismiss or requeue in bulk.

A transient database failure does not lose a correction: the attempt is recorded as failed,
with its values, and ``requeue`` retries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from ledger import audit_log
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.core.review import Actor
from ledger.db import quarantine as qdb
from ledger.db.checkpoints import CheckpointSigning
from ledger.db.quarantine import ItemKey, ItemRow
from ledger.db.tokens import token_label
from ledger.errors import Conflict, InvalidRequest, NotFound, Unavailable
from ledger.logs import get_logger
from ledger.services.access import Principal, visible_labs
from ledger.services.limits import BULK_ITEMS_MAX, NOTE_CHARS_MAX
from ledger.services.quarantine.corrections import Attempt, replay_failed, validate_correction
from ledger.services.quarantine.linking import Dismissal, Outcome, actionable, decide, not_open, record_failures
from ledger.services.quarantine.reading import filter_for, item_id, parse_item_id, readable_item, summary
from ledger.services.quarantine.schemas import (
    BulkBody,
    BulkFilter,
    BulkResult,
    DismissBody,
    ItemResult,
    ResubmitBody,
    TransferBody,
)

__all__ = ["BULK_ITEMS_MAX", "CORRECTION_LOCK_TIMEOUT_MS", "bulk", "dismiss", "resubmit", "transfer"]

log = get_logger("ledger.quarantine")

# Items one bulk call decides; with a filter, the newest this many and the rest are reported.
# How long an officer's action waits in all, locks included (the head lock is held for the whole
# final transaction of an import, which can take a while for a large one): the decision gets
# CORRECTION_LOCK_TIMEOUT_MS, and recording a correction that timed out as `failed` the rest.
# The bound is on the whole, not on each lock: one wait of 15 s per lock let an action behind
# an import's final transaction wait 19.4 s.
ACTION_WAIT_SECONDS = 15.0
CORRECTION_LOCK_TIMEOUT_MS = 10_000
_BULK_ACTIONS = ("dismiss", "requeue")

# Database failures worth retrying: the request was fine, the moment was not.
_TRANSIENT: dict[type[BaseException], str] = {
    asyncpg.LockNotAvailableError: "lock_not_available",
    asyncpg.SerializationError: "serialization_failure",
    asyncpg.DeadlockDetectedError: "deadlock_detected",
    asyncpg.QueryCanceledError: "query_canceled",
    asyncpg.ConnectionDoesNotExistError: "connection_lost",
    asyncpg.CannotConnectNowError: "cannot_connect_now",
}


def _check_note(note: str | None, *, required: bool, what: str) -> str | None:
    if note is not None and len(note) > NOTE_CHARS_MAX:
        raise InvalidRequest("note_too_long", f"{what} is limited to {NOTE_CHARS_MAX} characters")
    if required and not (note or "").strip():
        raise InvalidRequest(f"{what}_required", f"give a non-empty {what}")
    return note


async def _actor(pool: asyncpg.Pool[Any], principal: Principal) -> Actor:
    label = await token_label(pool, principal.token_id)
    return Actor(token_id=str(principal.token_id), role=principal.role, label=label)


def _transient_code(exc: BaseException) -> str | None:
    if isinstance(exc, TimeoutError):  # the action's own bound ran out while it waited for locks
        return "lock_not_available"
    for kind, code in _TRANSIENT.items():
        if isinstance(exc, kind):
            return code
    if isinstance(exc, (ConnectionError, OSError, asyncpg.InterfaceError)):
        return "connection_lost"
    return None


# The audit log's action for what the officer asked (a correction's action; a dismissal's is the
# caller's: single or bulk).
_AUDIT_ACTIONS = {
    "resubmit": audit_log.QUARANTINE_RESUBMIT,
    "transfer": audit_log.QUARANTINE_TRANSFER,
    "requeue": audit_log.QUARANTINE_REQUEUE,
}


def _audit(actor: Actor, outcomes: Sequence[Outcome], attempts: Sequence[Attempt], dismiss_action: str) -> None:
    """An audit line per decision the transaction put on the ledger, at its review entry, written
    once it has committed; an item not acted on (no entry) was not decided."""
    actions = {a.key: _AUDIT_ACTIONS[a.action] for a in attempts}
    for o in outcomes:
        if o.entry is None:
            continue
        done = o.result in ("resolved", "dismissed")
        fields = audit_log.LedgerFields(
            task_id=str(o.key.import_id),
            lab=o.lab,
            item_id=item_id(o.key),
            item_status=o.status,
            batch_seq=o.entry.seq,
            entry_index=o.entry.idx,
            batch_hash=o.batch_hash,
            record_hash=o.entry_hash,
            correction_hash=o.record_hash,
        )
        event = audit_log.event(
            actions.get(o.key, dismiss_action),
            outcome="success" if done else "failure",
            actor=actor,
            ledger=fields,
            reason=None if done else o.result,
        )
        audit_log.after_commit(event)


async def _run(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    principal: Principal,
    attempts: Sequence[Attempt],
    dismissals: Sequence[Dismissal],
    *,
    requeue: bool,
    signing: CheckpointSigning | None,
    dismiss_action: str = audit_log.QUARANTINE_DISMISS,
) -> list[Outcome]:
    """Decide; if the database fails transiently, record the corrections as failed attempts."""
    actor = await _actor(pool, principal)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ACTION_WAIT_SECONDS
    try:
        # The audit lines (decisions, the checkpoint) are written once decide has committed.
        async with asyncio.timeout(CORRECTION_LOCK_TIMEOUT_MS / 1000), pool.acquire() as conn, audit_log.deferred():
            outcomes = await decide(
                conn,
                actor,
                principal.token_id,
                attempts,
                dismissals,
                requeue=requeue,
                batch_rows_max=settings.batch_rows_max,
                lock_timeout_ms=CORRECTION_LOCK_TIMEOUT_MS,
                signing=signing,
            )
            _audit(actor, outcomes, attempts, dismiss_action)
            return outcomes
    except Exception as exc:
        code = _transient_code(exc)
        if code is None:
            raise
        log.warning(
            "decision_transient_failure",
            stage="quarantine",
            code=code,
            corrections=[item_id(a.key) for a in attempts],
            dismissals=[item_id(d.key) for d in dismissals],
        )
        if not attempts:
            raise Unavailable("transient_failure", f"the database failed transiently ({code}); try again") from exc
        try:
            async with asyncio.timeout_at(deadline), pool.acquire() as conn, audit_log.deferred():
                outcomes = await record_failures(
                    conn, actor, principal.token_id, attempts, code, settings.batch_rows_max, signing
                )
                _audit(actor, outcomes, attempts, dismiss_action)
                return outcomes
        except Exception as again:
            if _transient_code(again) is None:
                raise
            raise Unavailable(
                "transient_failure", f"the database failed transiently ({code}) and the attempt could not be recorded"
            ) from again


# What an officer is told when an action was not carried out as asked: (code, message) by result.
_NOT_DONE: dict[str, tuple[str, str]] = {
    "conflict": (
        "revised_since",
        "the asset was revised in the ledger after this row was quarantined, to other content; "
        'the attempt is recorded; resubmit with "supersede": true to commit it anyway, or dismiss',
    ),
    "transient_failure": (
        "transient_failure",
        "the correction could not be committed for a transient database failure; it is recorded; requeue",
    ),
    "other_lab": (
        "other_lab",
        "the asset is registered to another lab; nothing was changed; a compliance officer may "
        "transfer it to this item's lab (POST /quarantine/{id}/transfer with a note saying why)",
    ),
    "not_other_lab": (
        "not_other_lab",
        "the asset is not registered to another lab; nothing was changed; resubmit the row instead",
    ),
}


def _result(outcome: Outcome) -> ItemResult:
    code: str | None
    message: str | None
    code, message = _NOT_DONE.get(outcome.result, (None, None))
    if outcome.result == "skipped":
        code = "not_open"
        message = f"the item is already {outcome.status} ({outcome.reason}); nothing was done"
        if outcome.status == "open":
            code, message = "not_transient", f"the item's reason is {outcome.reason}, not transient_failure"
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


def _single(outcome: Outcome) -> ItemResult:
    """One item's answer; a lost race or a refusal is a 409 that carries the current state."""
    result = _result(outcome)
    if outcome.result == "skipped":
        assert outcome.item is not None
        raise Conflict(
            "already_decided" if outcome.status != "open" else "not_transient",
            result.message or "",
            item=msgspec.to_builtins(summary(outcome.item)),
        )
    if outcome.result == "conflict":
        raise Conflict("revised_since", result.message or "", result=msgspec.to_builtins(result))
    if outcome.result == "transient_failure":
        raise Unavailable("transient_failure", result.message or "", result=msgspec.to_builtins(result))
    if outcome.result in ("other_lab", "not_other_lab"):
        raise Conflict(outcome.result, result.message or "", result=msgspec.to_builtins(result))
    return result


# ---------------------------------------------------------------- acting


async def resubmit(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    raw_id: str,
    body: ResubmitBody,
    *,
    signing: CheckpointSigning | None = None,
) -> ItemResult:
    note = _check_note(body.note, required=False, what="note")
    return await _correct(
        pool,
        settings,
        policies,
        principal,
        raw_id,
        _Correcting("resubmit", body.values, note, body.policy),
        supersede=body.supersede,
        signing=signing,
    )


async def transfer(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    raw_id: str,
    body: TransferBody,
    *,
    signing: CheckpointSigning | None = None,
) -> ItemResult:
    """Commit the row (with ``values`` merged in) as the next revision of an asset key another
    lab holds, moving the key to the item's lab: an officer's decision on the ledger, saying who
    moved it, from which lab, to which, and why."""
    note = _check_note(body.note, required=True, what="note")
    return await _correct(
        pool,
        settings,
        policies,
        principal,
        raw_id,
        _Correcting("transfer", body.values, note, body.policy),
        supersede=True,
        signing=signing,
    )


class _Correcting(msgspec.Struct, frozen=True):
    """What an officer sent to correct one item: resubmit or transfer."""

    action: str
    values: dict[str, str]
    note: str | None
    policy: str | None


async def _correct(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    raw_id: str,
    sent: _Correcting,
    *,
    supersede: bool,
    signing: CheckpointSigning | None,
) -> ItemResult:
    """One item's correction, validated before the head lock and decided under it."""
    item = await readable_item(pool, principal, raw_id)
    if not actionable(item, requeue=False):
        _single(not_open(item))
    attempt = validate_correction(
        policies,
        item,
        action=sent.action,
        values=sent.values,
        note=sent.note,
        policy_choice=sent.policy,
        supersede=supersede,
        transfer=sent.action == "transfer",
    )
    (outcome,) = await _run(pool, settings, principal, [attempt], [], requeue=False, signing=signing)
    return _single(outcome)


async def dismiss(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    principal: Principal,
    raw_id: str,
    body: DismissBody,
    *,
    signing: CheckpointSigning | None = None,
) -> ItemResult:
    note = _check_note(body.reason, required=True, what="reason")
    assert note is not None
    item = await readable_item(pool, principal, raw_id)
    dismissal = Dismissal(key=item.key, note=note)
    (outcome,) = await _run(pool, settings, principal, [], [dismissal], requeue=False, signing=signing)
    return _single(outcome)


async def bulk(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    principal: Principal,
    body: BulkBody,
    *,
    signing: CheckpointSigning | None = None,
) -> BulkResult:
    """Dismiss or requeue many items: a constant number of statements whatever their count."""
    if body.action not in _BULK_ACTIONS:
        raise InvalidRequest("invalid_action", f"action must be one of {', '.join(_BULK_ACTIONS)}")
    if (body.ids is None) == (body.filter is None):
        raise InvalidRequest("ids_or_filter", 'give either "ids" or "filter"')
    note = _check_note(body.reason, required=body.action == "dismiss", what="reason")
    requeue = body.action == "requeue"
    remaining = 0
    # (id as given, key or None when the id is not one this service issues), in request order.
    order: list[tuple[str, ItemKey | None]]
    if body.ids is not None:
        order = _by_ids(body.ids)
        wanted = [k for _, k in order if k is not None]
    else:
        assert body.filter is not None
        wanted, remaining = await _by_filter(pool, policies, principal, body.filter, requeue=requeue)
        order = [(item_id(k), k) for k in wanted]
    results, acting_on = await _triage(pool, principal, wanted, requeue=requeue)
    attempts, dismissals = _plan(policies, acting_on, note, requeue=requeue, results=results)
    if attempts or dismissals:
        for outcome in await _run(
            pool,
            settings,
            principal,
            attempts,
            dismissals,
            requeue=requeue,
            signing=signing,
            dismiss_action=audit_log.QUARANTINE_BULK_DISMISS,
        ):
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


def _by_ids(ids: Sequence[str]) -> list[tuple[str, ItemKey | None]]:
    """Each id once, in request order, with its key (None for an id this service never issues)."""
    if not 1 <= len(ids) <= BULK_ITEMS_MAX:
        raise InvalidRequest("too_many_items", f"give 1 to {BULK_ITEMS_MAX} ids per call")
    order: list[tuple[str, ItemKey | None]] = []
    seen: set[ItemKey] = set()
    for raw in ids:
        try:
            key: ItemKey | None = parse_item_id(raw)
        except NotFound:
            key = None
        if key is None or key not in seen:
            order.append((raw, key))
        if key is not None:
            seen.add(key)
    return order


async def _by_filter(
    pool: asyncpg.Pool[Any], policies: PolicyRegistry, principal: Principal, given: BulkFilter, *, requeue: bool
) -> tuple[list[ItemKey], int]:
    """The newest BULK_ITEMS_MAX items the filter matches, and how many more it matches."""
    # A filter acts on open items only; requeue on those that failed transiently.
    reason = "transient_failure" if requeue else given.reason
    query = BulkFilter(**{**msgspec.structs.asdict(given), "status": "open", "reason": reason})
    flt = filter_for(policies, principal, query)
    rows = await qdb.list_items(pool, flt, after=None, limit=BULK_ITEMS_MAX + 1)
    wanted = [r.key for r in rows[:BULK_ITEMS_MAX]]
    remaining = 0
    if len(rows) > BULK_ITEMS_MAX:
        remaining = await qdb.count_items(pool, flt) - BULK_ITEMS_MAX
    return wanted, remaining


async def _triage(
    pool: asyncpg.Pool[Any], principal: Principal, wanted: Sequence[ItemKey], *, requeue: bool
) -> tuple[dict[ItemKey, ItemResult], list[ItemRow]]:
    """The answers for items that cannot be acted on (unknown, another lab's, not open), and the
    items that can, as they stand now."""
    states = await qdb.item_states(pool, wanted)
    labs = visible_labs(principal)
    results: dict[ItemKey, ItemResult] = {}
    acting_on: list[ItemRow] = []
    for key in wanted:
        item = states.get(key)
        if item is None or (labs is not None and item.lab not in labs):
            results[key] = ItemResult(
                id=item_id(key), result="not_found", code="not_found", message="no such quarantine item"
            )
        elif not actionable(item, requeue=requeue):
            results[key] = _result(not_open(item))
        else:
            acting_on.append(item)
    return results, acting_on


def _plan(
    policies: PolicyRegistry,
    items: Sequence[ItemRow],
    note: str | None,
    *,
    requeue: bool,
    results: dict[ItemKey, ItemResult],
) -> tuple[list[Attempt], list[Dismissal]]:
    """A dismissal per item, or for a requeue its failed correction validated again; a
    correction that no longer validates is answered in ``results`` and not retried."""
    attempts: list[Attempt] = []
    dismissals: list[Dismissal] = []
    for item in items:
        if not requeue:
            assert note is not None
            dismissals.append(Dismissal(key=item.key, note=note))
            continue
        try:
            attempts.append(replay_failed(policies, item, note))
        except (InvalidRequest, Conflict) as exc:
            results[item.key] = ItemResult(
                id=item_id(item.key),
                result="invalid",
                status=item.status,
                reason=item.reason,
                code=exc.code,
                message=exc.message,
                errors=exc.extra.get("errors"),
            )
    return attempts, dismissals
