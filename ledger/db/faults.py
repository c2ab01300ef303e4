"""Which database failures are transient: worth retrying, and answered 503 rather than 500.

Transient here means the same work can succeed unchanged once the database is back or the
conflicting transaction has gone: a lost connection, PostgreSQL restarting or refusing
connections for now, a serialisation failure, a deadlock, a lock or statement timeout. A
constraint violation, bad SQL or a data error is a bug or bad input and is never retried.
"""

from __future__ import annotations

import asyncpg

__all__ = ["is_transient", "is_unavailable"]

# SQLSTATE classes and codes (PostgreSQL appendix A).
_TRANSIENT_CLASSES = ("08", "53", "57")  # connection exception, insufficient resources, operator intervention
_TRANSIENT_CODES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available (lock_timeout)
        "57014",  # query_canceled (statement_timeout)
    }
)


def _sqlstate(exc: BaseException) -> str:
    return str(getattr(exc, "sqlstate", "") or "")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _raised_in_driver(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg"):
            return True
        tb = tb.tb_next
    return False


def _is_connection_loss(exc: BaseException) -> bool:
    if isinstance(
        exc,
        asyncpg.ConnectionDoesNotExistError
        | asyncpg.CannotConnectNowError
        | asyncpg.TooManyConnectionsError
        | ConnectionError,
    ):
        return True
    # A connection the server dropped is closed, and asyncpg detaches a pooled one from its
    # proxy: using either again raises InterfaceError saying so (seen after pg_terminate_backend
    # mid-COPY). Other InterfaceErrors are our bugs.
    if isinstance(exc, asyncpg.InterfaceError) and any(
        phrase in str(exc) for phrase in ("closed", "released back to the pool")
    ):
        return True
    # The driver's own state machine, caught mid-operation by the connection dying under it
    # ("cannot switch to state 12; another operation is in progress", seen on a pooled
    # connection right after the postmaster was killed).
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    # Connecting while the server restarts fails with a bare OSError (its socket file is gone:
    # FileNotFoundError) or a timeout; the same errors from our own file work are not the
    # database's, so only those raised inside the driver count.
    return isinstance(exc, OSError | TimeoutError) and _raised_in_driver(exc)


def is_transient(exc: BaseException) -> bool:
    """True for a failure that a retry of the same work may get past."""
    for link in _chain(exc):
        if _is_connection_loss(link):
            return True
        code = _sqlstate(link)
        if code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES:
            return True
    return False


def is_unavailable(exc: BaseException) -> bool:
    """True when the database cannot be reached or will not serve now (the API says 503)."""
    for link in _chain(exc):
        if _is_connection_loss(link):
            return True
        code = _sqlstate(link)
        if code[:2] in ("08", "53") or code.startswith("57P"):
            return True
    return False
