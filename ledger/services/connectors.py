"""Connectors on the server: registering sources, recording syncs, and running one in a worker.

A sync, wherever it runs, ends as one import through the same path as an uploaded file
(``record_import``): the worker spools the manifest itself; `ledger pull` records its sync here
(``record_client_sync``), then uploads the manifest naming the sync (form field
``connector_sync``), and ``attach`` links the two in the transaction that inserts the import.
The import's receipt then records the sync's pages, and its commit moves the source's cursor.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import httpx
import msgspec

from ledger import audit_log
from ledger.config import Settings
from ledger.connectors.definition import DefinitionError, SourceDefinition, check_columns, from_builtins
from ledger.connectors.definition import parse_definition as parse_toml
from ledger.connectors.sync import Status, SyncResult, remove_leftovers, run_sync
from ledger.connectors.window import CursorState
from ledger.core import roles
from ledger.core.errors import LedgerFormatError
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.core.records import ReceiptSource, check_source
from ledger.db import connectors as db
from ledger.db import tokens as tokens_db
from ledger.db.job_queue import enqueue_connector_sync
from ledger.db.pool import Conn, Executor
from ledger.errors import Conflict, InvalidRequest, NotFound
from ledger.ingest.spool import SpoolResult
from ledger.logs import get_logger
from ledger.services.access import Principal, require_lab, sees_lab
from ledger.services.imports import prepare_spool, record_import
from ledger.services.labs import require_known

__all__ = [
    "ClientPage",
    "ClientSync",
    "Connector",
    "Sync",
    "connector",
    "list_connectors",
    "record_client_sync",
    "register",
    "run_scheduled",
    "run_worker_sync",
    "syncs",
    "trigger",
]

log = get_logger("ledger.connectors")

SYNCS_LIMIT_MAX = 100
WORKER_LOST = {"code": "worker_lost", "message": "the worker running this sync stopped before it ended"}


class Sync(msgspec.Struct, frozen=True, kw_only=True):
    """One sync as GET /connectors/{name}/syncs shows it."""

    sync_id: str
    connector: str
    origin: str
    status: str
    task_id: str | None
    import_status: str | None
    records: int
    fetched: int
    skipped: int
    cursor_from: str | None
    cursor_to: str | None
    errors: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    pages: list[dict[str, Any]]
    started_at: datetime
    finished_at: datetime | None


class Connector(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    lab: str
    policy: str
    url: str
    schedule: str | None
    scheduled: bool
    cursor: str | None
    cursor_keys: list[str]
    cursor_updated_at: datetime | None
    registered_at: datetime
    updated_at: datetime
    definition: dict[str, Any]
    last_sync: Sync | None = None


class RegisterBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    definition: str  # the TOML source file's text


# The counts go to BIGINT columns, bounded where every JSON reader (and the API schema, which
# states bounds as floats) still has them exactly; the manifest's digest is the upload's.
_Count = Annotated[int, msgspec.Meta(ge=0, le=2**53)]
_Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]


class ClientPage(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A page a client's sync read, as its import's receipt records it (docs/ledger-format.md
    §4.3): read, with the SHA-256 of its body; or failed, with the error that ended the sync."""

    url: str
    cursor: str | None
    next: str | None
    sha256: _Sha256 | None
    records: _Count
    error: str | None = None


class ClientSync(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What `ledger pull` read, sent before its manifest (POST /connectors/{name}/pulls)."""

    definition: str
    status: Status
    records: _Count
    fetched: _Count
    skipped: _Count
    pages: list[ClientPage]
    errors: list[dict[str, Any]]
    problems: list[dict[str, Any]]
    cursor_from: str | None
    cursor_to: CursorState | None
    manifest_sha256: _Sha256 | None


def _sync(row: db.SyncRow) -> Sync:
    return Sync(
        sync_id=str(row.id),
        connector=row.connector,
        origin=row.origin,
        status=row.status,
        task_id=None if row.import_id is None else str(row.import_id),
        import_status=row.import_status,
        records=row.records,
        fetched=row.fetched,
        skipped=row.skipped,
        cursor_from=row.cursor_from,
        cursor_to=None if row.cursor_to is None else row.cursor_to.get("value"),
        errors=row.errors,
        problems=row.problems,
        pages=row.pages,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _connector(row: db.ConnectorRow, last: db.SyncRow | None = None) -> Connector:
    d = row.definition
    cursor = row.cursor or {}
    return Connector(
        name=row.name,
        lab=row.lab,
        policy=str(d.get("policy")),
        url=str(d.get("base_url", "")).rstrip("/")
        + ("/" + str(d["resource"]).lstrip("/") if d.get("resource") else ""),
        schedule=row.schedule,
        scheduled=row.scheduled,
        cursor=cursor.get("value"),
        cursor_keys=list(cursor.get("keys") or []),
        cursor_updated_at=row.cursor_updated_at,
        registered_at=row.created_at,
        updated_at=row.updated_at,
        definition=d,
        last_sync=None if last is None else _sync(last),
    )


# A definition's problem as DefinitionError words it: "<key>: <what is wrong>", or no key.
_KEYED = re.compile(r"^([\w.\[\]-]+): (.+)$", re.DOTALL)
# TOML escapes can put what a JSON body may not hold into a string (a NUL, which PostgreSQL
# cannot store); every string of a definition is one line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _problem(text: str) -> dict[str, str]:
    """One problem in the shape the API's Error documents (``key``, ``message``)."""
    keyed = _KEYED.match(text)
    return {"key": keyed[1], "message": keyed[2]} if keyed else {"message": text}


def _controls(value: Any, where: str) -> Iterator[str]:
    """The problems of every string in ``value`` (keys included) holding a control character."""
    if isinstance(value, str) and _CONTROL.search(value):
        yield f"{where}: must not contain control characters"
    elif isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if _CONTROL.search(str(key)):
                yield f"{where or 'definition'}: a key must not contain control characters"
            else:
                yield from _controls(item, here)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _controls(item, f"{where}[{i}]")


def _checked(text: str, policies: PolicyRegistry) -> SourceDefinition:
    """The definition, valid and mapped onto columns its policy has (422 naming what is wrong)."""
    try:
        definition = parse_toml(text, source="definition")
        if controls := list(_controls(definition.as_dict(), "")):
            raise DefinitionError("definition", controls)
        policy = policies.get(definition.policy)
        check_columns(definition, policy.field_names, policy.required_columns)
    except DefinitionError as exc:
        problems = [_problem(p) for p in exc.problems]
        raise InvalidRequest("invalid_definition", str(exc), problems=problems) from None
    except UnknownPolicy as exc:
        raise InvalidRequest("unknown_policy", str(exc)) from None
    return definition


def _check_pages(name: str, body: ClientSync) -> None:
    """The pages of a client's sync become its import's receipt (``source``): refused now, by the
    rules the ledger's verifiers apply (docs/ledger-format.md §4.3), not when the import commits."""
    if body.manifest_sha256 is None:
        return  # no import, no receipt
    source = {
        "connector": name,
        "sync_id": "-",  # given by the server; only its presence is a rule
        "cursor_from": body.cursor_from,
        "cursor_to": None if body.cursor_to is None else body.cursor_to.value,
        "pages": msgspec.to_builtins(body.pages),
    }
    try:
        check_source(msgspec.convert(source, ReceiptSource))
    except (LedgerFormatError, msgspec.ValidationError) as exc:
        raise InvalidRequest("invalid_pages", str(exc).removeprefix("not a receipt: "), field="pages") from None


async def register(
    conn: Conn, principal: Principal, policies: PolicyRegistry, text: str, *, scheduled: bool = True
) -> tuple[bool, Connector]:
    """`ledger connector add`: register a source (or replace the definition of one of the
    caller's labs); the worker runs it on its schedule, if it has one."""
    definition = _checked(text, policies)
    require_lab(principal, definition.lab)
    created, row = await _upsert(conn, principal, definition, scheduled=scheduled)
    log.info("connector_registered", stage="connectors", connector=row.name, lab=row.lab, created=created)
    audit_log.after_commit(
        audit_log.event(
            audit_log.CONNECTOR_REGISTERED,
            actor=principal,
            ledger=audit_log.LedgerFields(connector=row.name, lab=row.lab),
        )
    )
    return created, _connector(row)


async def _upsert(
    conn: Conn, principal: Principal, definition: SourceDefinition, *, scheduled: bool
) -> tuple[bool, db.ConnectorRow]:
    """Register the source, or replace its definition; 409 if its name is another lab's."""
    await require_known(conn, [definition.lab])
    created, row = await db.upsert_connector(
        conn,
        name=definition.name,
        lab=definition.lab,
        definition=definition.as_dict(),
        schedule=definition.schedule,
        scheduled=scheduled,
        created_by=principal.token_id,
    )
    if row.lab != definition.lab:
        raise Conflict("connector_lab_mismatch", f"the connector {definition.name!r} belongs to another lab")
    return created, row


async def _visible(conn: Executor, principal: Principal, name: str) -> db.ConnectorRow:
    row = await db.get_connector(conn, name)
    if row is None or not sees_lab(principal, row.lab):
        raise NotFound("not_found", f"no connector {name[:80]!r}")
    return row


async def list_connectors(conn: Executor, principal: Principal) -> list[Connector]:
    labs = None if principal.role != roles.LAB_MANAGER else list(principal.labs)
    return [_connector(row, last) for row, last in await db.list_connectors(conn, labs)]


async def connector(conn: Executor, principal: Principal, name: str) -> Connector:
    return _connector(await _visible(conn, principal, name))


async def syncs(conn: Executor, principal: Principal, name: str, limit: int) -> list[Sync]:
    await _visible(conn, principal, name)
    if not 1 <= limit <= SYNCS_LIMIT_MAX:
        raise InvalidRequest("invalid_limit", f"limit must be between 1 and {SYNCS_LIMIT_MAX}", field="limit")
    return [_sync(row) for row in await db.list_syncs(conn, name, limit)]


async def trigger(conn: Conn, principal: Principal, name: str) -> bool:
    """Queue a sync of a registered source now (officers and admins); False when one is already
    queued or running."""
    row = await _visible(conn, principal, name)
    queued = await enqueue_connector_sync(conn, row.name, str(principal.token_id))
    log.info("connector_sync_requested", stage="connectors", connector=row.name, queued=queued)
    return queued


async def record_client_sync(
    conn: Conn, principal: Principal, policies: PolicyRegistry, name: str, body: ClientSync
) -> Sync:
    """`ledger pull`'s sync, before its manifest is uploaded (if it has one). The source is
    registered as it was pulled (unscheduled, unless `ledger connector add` scheduled it)."""
    definition = _checked(body.definition, policies)
    if definition.name != name:
        raise InvalidRequest("name_mismatch", f"the definition names {definition.name!r}, the URL {name[:80]!r}")
    if (body.manifest_sha256 is None) != (body.records == 0 or body.status == "failed"):
        raise InvalidRequest("invalid_sync", "a sync with records names its manifest's SHA-256; one without names none")
    _check_pages(name, body)
    require_lab(principal, definition.lab)
    async with conn.transaction():
        await _upsert(conn, principal, definition, scheduled=False)
        sync_id = uuid.uuid4()
        await db.insert_sync(
            conn,
            sync_id=sync_id,
            connector=name,
            lab=definition.lab,
            origin="client",
            status=body.status,
            requested_by=principal.token_id,
        )
        await db.finish_sync(conn, sync_id, _result_columns(body))
        found = await db.get_sync(conn, sync_id)
    assert found is not None
    log.info("connector_pulled", stage="connectors", connector=name, sync_id=str(sync_id), status=body.status)
    _audit_sync_ended(found, actor=principal)
    return _sync(found)


def _audit_sync_ended(row: db.SyncRow, *, actor: Principal | None = None) -> None:
    """The SIEM's line for a sync that ended (a pull's when it is recorded, before its upload;
    a worker's, with no request, as the worker's)."""
    audit_log.after_commit(
        audit_log.event(
            audit_log.CONNECTOR_SYNC_ENDED,
            provider=None if actor is not None else "worker",
            outcome="success" if row.status == "ok" else "failure",
            actor=actor,
            ledger=audit_log.LedgerFields(
                connector=row.connector,
                lab=row.lab,
                sync_id=str(row.id),
                sync_status=row.status,
                records=row.records,
                task_id=None if row.import_id is None else str(row.import_id),
            ),
            error_code=row.errors[0].get("code") if row.errors else None,
        )
    )


def _result_columns(result: ClientSync | SyncResult) -> dict[str, Any]:
    """What connector_syncs records of a sync: a worker's own, or what a pull sent (the same
    members, SyncResult.record, beside its definition)."""
    if isinstance(result, SyncResult):
        return result.record()
    columns: dict[str, Any] = msgspec.to_builtins(result)
    del columns["definition"]
    return columns


# ---------------------------------------------------------------------------------- the worker


async def run_scheduled(pool: asyncpg.Pool[Any], now: datetime) -> list[str]:
    """The scheduler's tick: queue a sync of every scheduled source whose cron expression fell
    due since its last run (one job per source at most, whichever worker ticks)."""
    import croniter

    async with pool.acquire() as conn, conn.transaction():
        due = []
        for name, schedule, last_run, registered in await db.scheduled_connectors(conn):
            since = last_run or registered
            if croniter.croniter(schedule, since).get_next(datetime) <= now:
                due.append(name)
        for name in due:
            await enqueue_connector_sync(conn, name)
        if due:
            await db.mark_run(conn, due)
    return due


async def run_worker_sync(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    name: str,
    *,
    requested_by: uuid.UUID | None = None,
    client: httpx.AsyncClient | None = None,
) -> Sync | None:
    """One sync of a registered source, in a worker. At most one per source at a time across
    every worker: the sync holds the source's advisory lock on a connection of its own for as
    long as it runs (a killed worker's lock goes with its connection). None if another holds it."""
    async with pool.acquire() as lock_conn:
        got = await lock_conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended('connector:' || $1, 0))", name)
        if not got:
            log.info("connector_sync_busy", stage="connectors", connector=name)
            return None
        try:
            return await _locked_sync(pool, settings, policies, name, requested_by, client)
        finally:
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await lock_conn.execute("SELECT pg_advisory_unlock(hashtextextended('connector:' || $1, 0))", name)


async def _locked_sync(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    name: str,
    requested_by: uuid.UUID | None,
    client: httpx.AsyncClient | None,
) -> Sync | None:
    async with pool.acquire() as conn:
        row = await db.get_connector(conn, name)
        if row is None:
            log.warning("connector_gone", stage="connectors", connector=name)
            return None
        stale = await db.fail_stale(conn, name, WORKER_LOST)
        if stale:
            log.warning("connector_sync_lost", stage="connectors", connector=name, syncs=stale)
        sync_id = uuid.uuid4()
        saved = None if row.cursor is None else msgspec.convert(row.cursor, CursorState)
        await db.insert_sync(
            conn,
            sync_id=sync_id,
            connector=name,
            lab=row.lab,
            origin="worker",
            status="running",
            requested_by=requested_by,
            cursor_from=None if saved is None else saved.value,
        )
    bound = log.bind(connector=name, sync_id=str(sync_id), lab=row.lab)
    directory = prepare_spool(settings) / "connectors"
    # Under the source's lock no other sync of it runs: a file of one in the spool is what a
    # killed worker's sync left there (mapped rows, lab data), which nothing would read.
    if leftovers := remove_leftovers(directory, name):
        bound.info("connector_leftovers_removed", stage="connectors", files=leftovers)
    result: SyncResult | None = None
    try:
        definition = from_builtins(row.definition, source=name)
        policy = policies.get(definition.policy)
        check_columns(definition, policy.field_names, policy.required_columns)
        async with contextlib.AsyncExitStack() as stack:
            http = client if client is not None else await stack.enter_async_context(httpx.AsyncClient())
            result = await run_sync(definition, saved=saved, directory=directory, client=http)
        bound.info(
            "connector_synced",
            stage="connectors",
            status=result.status,
            pages=len(result.pages),
            records=result.records,
            requests=result.requests,
        )
        columns = _result_columns(result)
        if result.manifest is not None:
            # Still running until its import is recorded: a reader never sees an ended sync
            # whose import is about to appear. The pages are in place for the import's source.
            columns["status"] = "running"
        async with pool.acquire() as conn:
            await db.finish_sync(conn, sync_id, columns)
        if result.manifest is not None:
            await _import(pool, settings, policies, row, definition, sync_id, result)
    except (DefinitionError, UnknownPolicy) as exc:
        error = {"code": "invalid_definition", "message": str(exc)}
        async with pool.acquire() as conn:
            await db.finish_sync(conn, sync_id, _failed_columns(error))
        bound.warning("connector_sync_refused", stage="connectors", error=str(exc))
    except Exception as exc:
        # One failing source never stops another: the sync is recorded failed, the job ends.
        error = {"code": "internal", "message": f"{type(exc).__name__}: {exc}"[:500]}
        with contextlib.suppress(Exception):
            async with pool.acquire() as conn:
                await db.finish_sync(conn, sync_id, _failed_columns(error, result))
        bound.exception("connector_sync_crashed", stage="connectors")
    finally:
        if result is not None and result.manifest is not None:
            with contextlib.suppress(FileNotFoundError):
                result.manifest.unlink()
    async with pool.acquire() as conn:
        found = await db.get_sync(conn, sync_id)
    if found is None:
        return None
    _audit_sync_ended(found)
    return _sync(found)


def _failed_columns(error: dict[str, Any], result: SyncResult | None = None) -> dict[str, Any]:
    return {
        "status": "failed",
        "records": 0,
        "fetched": 0 if result is None else result.fetched,
        "skipped": 0,
        "pages": [] if result is None else msgspec.to_builtins(result.pages),
        "errors": [error],
        "problems": [],
        "cursor_from": None if result is None else result.cursor_from,
        "cursor_to": None,
        "manifest_sha256": None,
    }


async def _import(
    pool: asyncpg.Pool[Any],
    settings: Settings,
    policies: PolicyRegistry,
    row: db.ConnectorRow,
    definition: SourceDefinition,
    sync_id: uuid.UUID,
    result: SyncResult,
) -> None:
    """The sync's manifest becomes an import, as an upload would, under the token that
    registered the source."""
    assert result.manifest is not None and result.manifest_sha256 is not None
    async with pool.acquire() as conn:
        owner = None if row.created_by is None else await tokens_db.get_token(conn, row.created_by)
    if owner is None or owner.revoked_at is not None:
        raise InvalidRequest(
            "no_owner", "the token that registered this connector is revoked or gone; register it again"
        )
    principal = Principal(token_id=owner.id, role=owner.role, labs=owner.labs or (row.lab,))
    # Moved into the spool under a name of its own: from here on the import owns the file.
    spooled_path = prepare_spool(settings) / f"connector-{sync_id}.jsonl"
    os.replace(result.manifest, spooled_path)
    spooled = SpoolResult(path=str(spooled_path), size=result.manifest_bytes, sha256_hex=result.manifest_sha256)

    try:
        await record_import(
            pool,
            settings,
            policies,
            principal,
            spooled=spooled,
            filename=f"{definition.name}.jsonl",
            fields={"policy": definition.policy, "lab": row.lab, "connector_sync": str(sync_id)},
            idempotency_key=None,
            # The sync ends in the transaction that records its import: never ended without
            # one, nor left running beside one if the worker dies right after.
            also=lambda conn, _import_id: db.set_status(conn, sync_id, result.status),
        )
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            spooled_path.unlink()
        raise
