"""The statuses of an import (``imports.status``), and the SQL conditions made from them.

An import moves queued -> parsing -> validating -> finalizing -> done, or ends failed or
cancelled; after a transient failure it waits in retrying and runs again from its checkpoint.
``loading`` is in the schema's list though nothing sets it now: rows written before may hold
it. Statements test for a set with the fragments below rather than a spelled-out list, so
that adding a status changes one line here.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "DONE",
    "FAILED",
    "FINALIZING",
    "LOADING",
    "PARSING",
    "QUEUED",
    "RETRYING",
    "RUNNING",
    "STATUSES",
    "TERMINAL",
    "VALIDATING",
    "active",
    "not_terminal",
    "running",
    "sql_list",
    "terminal",
]

QUEUED = "queued"
PARSING = "parsing"
VALIDATING = "validating"
LOADING = "loading"
RETRYING = "retrying"
FINALIZING = "finalizing"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

# In lifecycle order, which is also the order of the imports table's check constraint.
STATUSES = (QUEUED, PARSING, VALIDATING, LOADING, RETRYING, FINALIZING, DONE, FAILED, CANCELLED)
# An import in one of these has ended: nothing moves it any more.
TERMINAL = (DONE, FAILED, CANCELLED)
# Not ended yet: waiting for a worker, running, or waiting to run again.
ACTIVE = tuple(s for s in STATUSES if s not in TERMINAL)
# A worker has it in hand (queued and retrying ones wait for one).
RUNNING = (PARSING, VALIDATING, LOADING, FINALIZING)


def sql_list(statuses: Iterable[str]) -> str:
    """``('done', 'failed', 'cancelled')``: statuses are fixed identifiers, never user input."""
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


def terminal(column: str = "status") -> str:
    """``status IN ('done', 'failed', 'cancelled')``: the import has ended."""
    return f"{column} IN {sql_list(TERMINAL)}"


def not_terminal(column: str = "status") -> str:
    """``status NOT IN ('done', 'failed', 'cancelled')``: the import has not ended."""
    return f"{column} NOT IN {sql_list(TERMINAL)}"


def active(column: str = "status") -> str:
    """``status IN ('queued', 'parsing', ..., 'finalizing')``: the import has not ended."""
    return f"{column} IN {sql_list(ACTIVE)}"


def running(column: str = "status") -> str:
    """``status IN ('parsing', 'validating', 'loading', 'finalizing')``: a worker runs it."""
    return f"{column} IN {sql_list(RUNNING)}"
