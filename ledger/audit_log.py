"""The audit log for a SIEM (docs/audit-log.md): one JSON object per line for every security- or
compliance-relevant event, with a stable ECS-style schema, on a stream of its own.

It is not the operational log (ledger.logs: structlog on stderr, whose fields change as the code
does): this stream's fields are a contract, added to and never renamed or removed
(``ledger.schema_version``), and the structs below are the schema itself. The documentation's
table and the tests are checked against ``ACTIONS`` and ``AuditEvent``.

Where it goes (``LEDGER_AUDIT_LOG``): ``stdout`` (or ``-``), ``stderr``, ``off``, or a file path.
Unset: stdout for the long-running processes (serve, worker), which a container's log driver
ships apart from the operational log on stderr; stderr for one-shot commands, whose stdout is
their answer (a token, a JSON report). A file is opened with O_APPEND and each line is one
``os.write``, so the API and every worker may append to the same file without interleaving; it
is reopened when the path no longer names the open file (logrotate's rename-and-create), checked
by a ``stat`` before each line: events are few, and no process needs a signal.

When: once the fact an event reports is committed. Code that writes in a transaction collects
its events in ``deferred()`` around the transaction: they are written when the block ends
normally, after the commit, and dropped with a rollback. ``after_commit`` outside such a block
writes at once (a single autocommitted statement has committed by then).

Who and where: services pass the actor they act for; during an HTTP request (``request``, bound
by the access log around every request) the request's client address, method and route, and its
authenticated principal when none is passed, are added.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from typing import Any, Literal, Protocol

import msgspec
import structlog

from ledger.core.verify import VerifyReport

__all__ = [
    "ACTIONS",
    "ECS_VERSION",
    "SCHEMA_VERSION",
    "Action",
    "Actor",
    "AuditEvent",
    "LedgerFields",
    "TargetUser",
    "after_commit",
    "configure",
    "configured",
    "deferred",
    "emit",
    "event",
    "request",
    "verification_event",
]

SCHEMA_VERSION = 1
ECS_VERSION = "8.11.0"
SERVICE_NAME = "ledger"

# The values LEDGER_AUDIT_LOG names a stream by; anything else is a file path.
STDOUT = ("stdout", "-")
STDERR = "stderr"
OFF = "off"
FILE_MODE = 0o640

# A message or reason longer than this is cut: a line stays well under PIPE_BUF (4096 bytes),
# which a pipe writes atomically.
_TEXT_MAX = 500

_log = structlog.get_logger("ledger.audit")

Outcome = Literal["success", "failure", "unknown"]


# ---------------------------------------------------------------- the actions (a closed list)


class Action(msgspec.Struct, frozen=True):
    """What an ``event.action`` means: its ECS categorisation, the ``ledger.*`` fields every
    event of it carries, and, for the documentation, when it is written."""

    category: tuple[str, ...]
    type: tuple[str, ...]
    ledger: tuple[str, ...]
    summary: str
    # Whether an event of it caused by a request always names who acted (user.id, user.roles).
    actor: bool = False


IMPORT_SUBMITTED = "import-submitted"
IMPORT_DONE = "import-done"
IMPORT_FAILED = "import-failed"
IMPORT_CANCELLED = "import-cancelled"
QUARANTINE_RESUBMIT = "quarantine-resubmit"
QUARANTINE_TRANSFER = "quarantine-transfer"
QUARANTINE_DISMISS = "quarantine-dismiss"
QUARANTINE_BULK_DISMISS = "quarantine-bulk-dismiss"
QUARANTINE_REQUEUE = "quarantine-requeue"
CHECKPOINT_SIGNED = "checkpoint-signed"
CHECKPOINT_REFUSED = "checkpoint-refused"
SIGNING_KEY_REGISTERED = "signing-key-registered"
SIGNING_KEY_ROTATED = "signing-key-rotated"
TOKEN_CREATED = "token-created"
TOKEN_REVOKED = "token-revoked"
TOKEN_ROTATED = "token-rotated"
SIGNED_IN = "signed-in"
SIGNED_OUT = "signed-out"
SIGN_IN_FAILED = "sign-in-failed"
AUTHENTICATION_FAILED = "authentication-failed"
VERIFICATION_RUN = "verification-run"
ACCESS_DENIED = "access-denied"
CONNECTOR_REGISTERED = "connector-registered"
CONNECTOR_SYNC_ENDED = "connector-sync-ended"

_DB = ("database",)
_DECISION = ("task_id", "lab", "item_id", "item_status", "batch_seq", "entry_index", "batch_hash", "record_hash")

ACTIONS: dict[str, Action] = {
    IMPORT_SUBMITTED: Action(
        _DB, ("change",), ("task_id", "lab", "dry_run"), "a manifest was accepted and queued for import", actor=True
    ),
    IMPORT_DONE: Action(
        _DB,
        ("change",),
        ("task_id", "lab", "dry_run", "rows_total", "rows_committed", "rows_duplicate", "rows_quarantined"),
        "an import committed (its receipt's position; a dry run has none)",
    ),
    IMPORT_FAILED: Action(_DB, ("error",), ("task_id", "lab"), "an import ended failed; nothing of it is committed"),
    IMPORT_CANCELLED: Action(
        _DB, ("change",), ("task_id", "lab"), "an import was cancelled before it committed", actor=True
    ),
    QUARANTINE_RESUBMIT: Action(
        _DB, ("change",), _DECISION, "an officer resubmitted a corrected quarantined row", actor=True
    ),
    QUARANTINE_TRANSFER: Action(
        _DB,
        ("change",),
        _DECISION,
        "an officer transferred an asset key from another lab with a corrected row",
        actor=True,
    ),
    QUARANTINE_DISMISS: Action(_DB, ("change",), _DECISION, "an officer dismissed a quarantined row", actor=True),
    QUARANTINE_BULK_DISMISS: Action(
        _DB,
        ("change",),
        _DECISION,
        "an officer dismissed a quarantined row in a bulk action (one event per row)",
        actor=True,
    ),
    QUARANTINE_REQUEUE: Action(
        _DB,
        ("change",),
        _DECISION,
        "an officer retried a correction that had failed transiently (bulk requeue)",
        actor=True,
    ),
    CHECKPOINT_SIGNED: Action(
        _DB,
        ("creation",),
        ("tree_size", "root_hash", "checkpoint_id", "key_name", "key_id"),
        "a signed checkpoint of the ledger's head was stored",
    ),
    CHECKPOINT_REFUSED: Action(
        _DB,
        ("error",),
        ("tree_size", "batch_seq"),
        "the service refused to sign a checkpoint: the stored tree disagrees with the batch headers",
    ),
    SIGNING_KEY_REGISTERED: Action(
        ("configuration",), ("creation",), ("key_name", "key_id"), "the first checkpoint signing key was registered"
    ),
    SIGNING_KEY_ROTATED: Action(
        ("configuration",),
        ("change",),
        ("key_name", "key_id"),
        "a new checkpoint signing key was registered beside the earlier ones",
    ),
    CONNECTOR_REGISTERED: Action(
        ("configuration",),
        ("creation", "change"),
        ("connector", "lab"),
        "an upstream source was registered or its definition replaced (docs/connectors.md)",
        actor=True,
    ),
    CONNECTOR_SYNC_ENDED: Action(
        _DB,
        ("info",),
        ("connector", "lab", "sync_id", "sync_status", "records"),
        "a connector's sync ended (ok, partial or failed; task_id names the import it became)",
    ),
    TOKEN_CREATED: Action(("iam",), ("creation",), (), "an API token was created", actor=True),
    TOKEN_REVOKED: Action(("iam",), ("deletion",), (), "an API token was revoked", actor=True),
    TOKEN_ROTATED: Action(
        ("iam",),
        ("change",),
        ("replaced_token_id",),
        "an API token was given a new secret; the old one is revoked",
        actor=True,
    ),
    SIGNED_IN: Action(("authentication", "session"), ("start",), (), "a browser signed in to the pages", actor=True),
    SIGNED_OUT: Action(("session",), ("end",), (), "a browser signed out of the pages", actor=True),
    SIGN_IN_FAILED: Action(("authentication",), ("start",), (), "the sign-in page was sent a bad token"),
    AUTHENTICATION_FAILED: Action(
        ("authentication",), ("start",), (), "an API request presented a bad bearer token (unknown, revoked, expired)"
    ),
    VERIFICATION_RUN: Action(
        _DB,
        ("access",),
        ("batches_checked", "records_checked"),
        "the whole ledger was verified; failure: the first check that failed",
        actor=True,
    ),
    ACCESS_DENIED: Action(("web",), ("access",), (), "a request was refused for its role, its lab or its CSRF token"),
}

# The events that never have an actor: a worker's, or the service's own.
_NO_ACTOR = frozenset({IMPORT_DONE, IMPORT_FAILED, CHECKPOINT_REFUSED, SIGN_IN_FAILED, AUTHENTICATION_FAILED})


# ---------------------------------------------------------------- the schema


class _Fields(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """Every object of the schema: absent fields are left out, unknown ones are refused."""


class EcsFields(_Fields, frozen=True):
    version: str


class EventFields(_Fields, frozen=True):
    id: str
    kind: str
    category: list[str]
    type: list[str]
    action: str
    outcome: Outcome
    # api | web (a request), worker (an import), cli (a command), server (start-up).
    provider: str
    reason: str | None = None


class ServiceFields(_Fields, frozen=True):
    name: str
    version: str | None = None


class TargetUser(_Fields, frozen=True):
    """The token an iam event is about (ECS user.target)."""

    id: str
    roles: list[str]
    name: str | None = None


class UserFields(_Fields, frozen=True):
    id: str | None = None
    name: str | None = None
    roles: list[str] | None = None
    target: TargetUser | None = None


class SourceFields(_Fields, frozen=True):
    address: str
    ip: str | None = None


class HttpRequestFields(_Fields, frozen=True):
    method: str


class HttpFields(_Fields, frozen=True):
    request: HttpRequestFields


class ErrorFields(_Fields, frozen=True):
    # A stable code only: a message could quote what a client sent (a cell, a header).
    code: str


class TraceFields(_Fields, frozen=True):
    id: str


class LedgerFields(_Fields, frozen=True, kw_only=True):
    """The ledger's own fields: what an event is about, and where on the ledger it is."""

    schema_version: int = SCHEMA_VERSION
    lab: str | None = None
    labs: list[str] | None = None
    task_id: str | None = None
    dry_run: bool | None = None
    item_id: str | None = None
    item_status: str | None = None
    # The position: the batch and the entry in it the event refers to (an import's receipt, a
    # decision's review entry, a verification's first failure), its id for
    # GET /audit/proofs/entries/{entry_id} where known, the batch's Merkle root and the entry's
    # leaf hash; a checkpoint's tree size and root.
    batch_seq: int | None = None
    entry_index: int | None = None
    entry_id: int | None = None
    batch_hash: str | None = None
    record_hash: str | None = None
    correction_hash: str | None = None
    tree_size: int | None = None
    root_hash: str | None = None
    checkpoint_id: int | None = None
    key_name: str | None = None
    key_id: str | None = None
    # A connector's: the source, its sync, how the sync ended and the records it delivered.
    connector: str | None = None
    sync_id: str | None = None
    sync_status: str | None = None
    records: int | None = None
    rows_total: int | None = None
    rows_committed: int | None = None
    rows_duplicate: int | None = None
    rows_quarantined: int | None = None
    batches_checked: int | None = None
    records_checked: int | None = None
    replaced_token_id: str | None = None
    route: str | None = None


class AuditEvent(_Fields, frozen=True, kw_only=True):
    """One line of the audit log."""

    timestamp: str = msgspec.field(name="@timestamp")
    ecs: EcsFields
    event: EventFields
    service: ServiceFields
    user: UserFields | None = None
    source: SourceFields | None = None
    http: HttpFields | None = None
    error: ErrorFields | None = None
    trace: TraceFields | None = None
    ledger: LedgerFields


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a line (docs/audit-log.md)."""
    return msgspec.json.schema(AuditEvent)


# ---------------------------------------------------------------- where lines go


class _Sink:
    def write(self, line: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Off(_Sink):
    def write(self, line: bytes) -> None:
        pass


def _write_all(fd: int, line: bytes) -> None:
    view = memoryview(line)
    while view:
        view = view[os.write(fd, view) :]


class _Stream(_Sink):
    """The process's stdout or stderr, by descriptor: what the stream's Python object buffers is
    flushed first, so that lines keep their order with a command's own output."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, line: bytes) -> None:
        stream = sys.stdout if self.fd == 1 else sys.stderr
        with contextlib.suppress(Exception):
            stream.flush()
        _write_all(self.fd, line)


class _File(_Sink):
    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)

    def _current(self) -> int:
        """The open file, reopened when the path names another file or none (rotated away)."""
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            on_disk = None
        held = os.fstat(self._fd)
        if on_disk is None or (on_disk.st_ino, on_disk.st_dev) != (held.st_ino, held.st_dev):
            fresh = self._open()
            os.close(self._fd)
            self._fd = fresh
        return self._fd

    def write(self, line: bytes) -> None:
        with self._lock:
            _write_all(self._current(), line)

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            os.close(self._fd)


def _open_sink(destination: str) -> _Sink:
    where = destination.strip()
    if where.lower() in STDOUT:
        return _Stream(1)
    if where.lower() == STDERR:
        return _Stream(2)
    if where.lower() == OFF:
        return _Off()
    if not where:
        raise ValueError("LEDGER_AUDIT_LOG must be stdout, stderr, off or a file path, got an empty value")
    return _File(where)


class _Config(msgspec.Struct, frozen=True):
    sink: _Sink
    provider: str


_config = _Config(_Off(), "server")


def configure(destination: str, *, provider: str) -> None:
    """Write this process's audit lines to ``destination`` from now on (OSError if the file
    cannot be opened: a start-up with an audit log it cannot write must not go ahead)."""
    global _config
    _config = _Config(_open_sink(destination), provider)


@contextlib.contextmanager
def configured(destination: str, *, provider: str) -> Iterator[None]:
    """``configure`` for the block's duration (an app's lifespan), then what was before."""
    global _config
    before = _config
    configure(destination, provider=provider)
    mine = _config
    try:
        yield
    finally:
        _config = before
        mine.sink.close()


# ---------------------------------------------------------------- context: the request, the transaction

_REQUEST: ContextVar[Mapping[str, Any] | None] = ContextVar("ledger_audit_request", default=None)
_PENDING: ContextVar[list[AuditEvent] | None] = ContextVar("ledger_audit_pending", default=None)
_PROVIDER: ContextVar[str | None] = ContextVar("ledger_audit_provider", default=None)


@contextlib.contextmanager
def request(scope: Mapping[str, Any]) -> Iterator[None]:
    """Events emitted while an HTTP request is handled carry its client and principal: the ASGI
    scope is read when an event is made, by which time routing and authentication filled it."""
    token = _REQUEST.set(scope)
    try:
        yield
    finally:
        _REQUEST.reset(token)


class deferred:
    """Hold the events ``after_commit`` is given in the block until it ends normally: put it
    around a transaction (``with``, or in an ``async with`` before the transaction, whose commit
    then comes first), so they are written after the commit and never after a rollback. A
    nested block leaves them to the outermost one. ``provider`` names who writes (``worker``)."""

    def __init__(self, *, provider: str | None = None) -> None:
        self._provider = provider
        self._pending: list[AuditEvent] | None = None
        self._tokens: list[Token[Any]] = []

    def __enter__(self) -> None:
        if self._provider is not None:
            self._tokens.append(_PROVIDER.set(self._provider))
        if _PENDING.get() is None:
            self._pending = []
            self._tokens.append(_PENDING.set(self._pending))

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        for token in reversed(self._tokens):
            token.var.reset(token)
        self._tokens.clear()
        pending, self._pending = self._pending, None
        if kind is None and pending:
            for held in pending:
                emit(held)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        self.__exit__(kind, *rest)


def after_commit(audit_event: AuditEvent) -> None:
    """Write the event once the enclosing ``deferred`` block has ended (at once outside one)."""
    pending = _PENDING.get()
    if pending is None:
        emit(audit_event)
    else:
        pending.append(audit_event)


def emit(audit_event: AuditEvent) -> None:
    """Write one line. A failure to write is the operational log's error, never the caller's:
    the fact is committed by now, and the request that made it must still be answered."""
    try:
        _config.sink.write(msgspec.json.encode(audit_event) + b"\n")
    except Exception as exc:
        _log.error("audit_log_write_failed", stage="audit", action=audit_event.event.action, error=repr(exc))


# ---------------------------------------------------------------- making an event


class Actor(Protocol):
    """Who acted: a principal (ledger.services.access.Principal), or a review's actor."""

    @property
    def token_id(self) -> object: ...

    @property
    def role(self) -> str: ...

    @property
    def label(self) -> str | None: ...


def _now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@cache
def _service() -> ServiceFields:
    try:
        version: str | None = metadata.version("ledger")
    except metadata.PackageNotFoundError:
        version = None
    return ServiceFields(name=SERVICE_NAME, version=version)


@cache
def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (a container's arbitrary user)
        return None


def _is_actor(value: object) -> bool:
    return all(hasattr(value, name) for name in ("token_id", "role"))


def _user(actor: Actor | None, target: TargetUser | None, provider: str) -> UserFields | None:
    if actor is not None:
        roles = [actor.role]
        return UserFields(id=str(actor.token_id), name=getattr(actor, "label", None), roles=roles, target=target)
    if provider == "cli":
        # A command acts with the database's credentials for whoever runs it on the host.
        return UserFields(name=_os_user(), target=target)
    return None if target is None else UserFields(target=target)


def _source(scope: Mapping[str, Any] | None) -> SourceFields | None:
    client = None if scope is None else scope.get("client")
    if not client:
        return None
    address = str(client[0])
    try:
        ip: str | None = str(ipaddress.ip_address(address))
    except ValueError:  # a test client's name, a unix socket
        ip = None
    return SourceFields(address=address, ip=ip)


def _trace_id() -> str | None:
    """The active span's trace id, when OpenTelemetry is in use in this process (imported by
    whoever set tracing up: this module neither needs nor starts it)."""
    otel = sys.modules.get("opentelemetry.trace")
    if otel is None:
        return None
    try:
        context = otel.get_current_span().get_span_context()
    except Exception:
        return None
    if not getattr(context, "is_valid", False):
        return None
    return f"{context.trace_id:032x}"


def _cut(text: str | None) -> str | None:
    return text if text is None or len(text) <= _TEXT_MAX else text[:_TEXT_MAX] + "…"


def event(
    action: str,
    *,
    outcome: Outcome = "success",
    actor: Actor | None = None,
    ledger: LedgerFields | None = None,
    target: TargetUser | None = None,
    reason: str | None = None,
    error_code: str | None = None,
    provider: str | None = None,
) -> AuditEvent:
    """An event of ``action`` (one of ACTIONS), now. The request being handled, if any, gives
    the client address, the method and route, and the actor when none is given."""
    spec = ACTIONS[action]
    scope = _REQUEST.get()
    if scope is not None and provider is None:
        path = str(scope.get("path", ""))
        provider = "web" if path == "/" or path.startswith("/ui") else "api"
    provider = provider or _PROVIDER.get() or _config.provider
    if actor is None and scope is not None and action not in _NO_ACTOR:
        user = scope.get("user")
        if _is_actor(user):
            actor = user
    fields = ledger or LedgerFields()
    http = None
    if scope is not None:
        template = scope.get("path_template")
        if template is not None and fields.route is None:
            fields = msgspec.structs.replace(fields, route=str(template))
        if method := scope.get("method"):
            http = HttpFields(request=HttpRequestFields(method=str(method)))
    trace_id = _trace_id()
    return AuditEvent(
        timestamp=_now(),
        ecs=EcsFields(version=ECS_VERSION),
        event=EventFields(
            id=uuid.uuid4().hex,
            kind="event",
            category=list(spec.category),
            type=list(spec.type),
            action=action,
            outcome=outcome,
            provider=provider,
            reason=_cut(reason),
        ),
        service=_service(),
        ledger=fields,
        user=_user(actor, target, provider),
        source=_source(scope),
        http=http,
        error=None if error_code is None else ErrorFields(code=error_code),
        trace=None if trace_id is None else TraceFields(id=trace_id),
    )


def verification_event(report: VerifyReport) -> AuditEvent:
    """The outcome of a verification of the whole ledger, with its first failure's position
    (the check that failed is the error's code; its detail stays in the report)."""
    failure = report.first_failure
    return event(
        VERIFICATION_RUN,
        outcome="success" if report.ok else "failure",
        ledger=LedgerFields(
            batches_checked=report.batches_checked,
            records_checked=report.records_checked,
            batch_seq=None if failure is None else failure.batch_seq,
            entry_index=None if failure is None else failure.entry,
        ),
        error_code=None if failure is None else failure.reason,
    )
