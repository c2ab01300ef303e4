"""Acting on the queue: resubmit a correction, dismiss, dismiss or requeue in bulk.

A transient database failure does not lose a correction: the attempt is recorded as failed,
with its values, and ``requeue`` retries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.core.review import Actor
from ledger.db import quarantine as qdb
from ledger.db.quarantine import ItemKey, ItemRow
from ledger.errors import Conflict, InvalidRequest, NotFound, Unavailable
from ledger.logs import get_logger
from ledger.services.access import Principal, require_role, visible_labs
from ledger.services.quarantine.corrections import _Attempt, _attempt, _replay
from ledger.services.quarantine.linking import (
    _actionable,
    _decide,
    _Dismissal,
    _not_open,
    _Outcome,
    _record_failures,
)
from ledger.services.quarantine.reading import _filter, _item_key, _readable_item, _summary, item_id, parse_item_id
from ledger.services.quarantine.schemas import BulkBody, BulkFilter, BulkResult, DismissBody, ItemResult, ResubmitBody

__all__ = ["ACTORS", "BULK_ITEMS_MAX", "bulk", "dismiss", "resubmit"]

log = get_logger("ledger.quarantine")

ACTORS = ("compliance_officer", "admin")
# Items one bulk call decides; with a filter, the newest this many and the rest are reported.
BULK_ITEMS_MAX = 1_000
NOTE_CHARS_MAX = 2_000
# How long a decision waits for a lock (the head lock is held for the whole final transaction
# of an import, which can take a while for a large one) before it counts as a transient failure.
CORRECTION_LOCK_TIMEOUT_MS = 15_000
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
    label = await pool.fetchval("SELECT label FROM tokens WHERE id = $1", principal.token_id)
    return Actor(token_id=str(principal.token_id), role=principal.role, label=label)


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
                principal.token_id,
                attempts,
                dismissals,
                requeue=requeue,
                batch_rows_max=settings.batch_rows_max,
                lock_timeout_ms=CORRECTION_LOCK_TIMEOUT_MS,
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
                return await _record_failures(conn, actor, principal.token_id, attempts, code, settings.batch_rows_max)
        except Exception as again:
            if _transient_code(again) is None:
                raise
            raise Unavailable(
                "transient_failure", f"the database failed transiently ({code}) and the attempt could not be recorded"
            ) from again


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
    if not _actionable(item, requeue=False):
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
    (outcome,) = await _run(pool, settings, principal, [], [_Dismissal(key=_item_key(item), note=note)], requeue=False)
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
        wanted = [_item_key(r) for r in rows[:BULK_ITEMS_MAX]]
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
        elif not _actionable(item, requeue=body.action == "requeue"):
            results[key] = _result(_not_open(item))
        else:
            actionable.append(item)
    attempts: list[_Attempt] = []
    dismissals: list[_Dismissal] = []
    for item in actionable:
        key = _item_key(item)
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
