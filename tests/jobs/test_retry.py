"""The retry policy's arithmetic and which failures count as transient (ledger.db.faults)."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.cli.supervisor import Backoff
from ledger.db.faults import is_transient, is_unavailable
from ledger.jobs.retry import RetryPolicy


def test_delays_double_up_to_the_cap_with_full_jitter() -> None:
    policy = RetryPolicy(attempts=5, base_seconds=1.0, max_seconds=6.0)
    top = [policy.delay(n, uniform=lambda low, high: high).total_seconds() for n in range(1, 6)]
    assert top == [1.0, 2.0, 4.0, 6.0, 6.0]
    bottom = [policy.delay(n, uniform=lambda low, high: low).total_seconds() for n in range(1, 6)]
    assert bottom == [0.0] * 5
    for n in range(1, 6):
        assert 0.0 <= policy.delay(n).total_seconds() <= min(6.0, 2 ** (n - 1))


def test_attempts_count_the_first_one() -> None:
    policy = RetryPolicy(attempts=2, base_seconds=0.1, max_seconds=1.0)
    assert not policy.exhausted(1)
    assert policy.exhausted(2) and policy.exhausted(3)


def test_restart_backoff_grows_while_dying_young_and_resets_after_a_healthy_run() -> None:
    backoff = Backoff(first=0.5, cap=4.0, healthy_after=60.0)
    assert [backoff.next_delay(1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.next_delay(120.0) == 0.5
    assert backoff.next_delay(1.0) == 1.0


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.SerializationError("could not serialize access"),
        asyncpg.DeadlockDetectedError("deadlock detected"),
        asyncpg.LockNotAvailableError("lock timeout"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.TooManyConnectionsError("too many clients"),
        ConnectionResetError("reset by peer"),
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.InterfaceError("cannot call Transaction.__aexit__(): the underlying connection is closed"),
        asyncpg.InterfaceError("cannot call Connection.execute(): connection has been released back to the pool"),
    ],
)
def test_transient_failures(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.UndefinedColumnError("no such column"),
        asyncpg.DataError("bad data"),
        ValueError("a bug"),
        asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
        FileNotFoundError(2, "our own spool file is gone"),  # not raised by the driver
    ],
)
def test_permanent_failures_are_not_retried(exc: Exception) -> None:
    assert not is_transient(exc)
    assert not is_unavailable(exc)


def test_a_failure_wrapped_by_our_own_exception_is_still_transient() -> None:
    try:
        try:
            raise asyncpg.SerializationError("could not serialize access")
        except asyncpg.SerializationError as inner:
            raise RuntimeError("finalize failed") from inner
    except RuntimeError as outer:
        assert is_transient(outer)
        assert not is_unavailable(outer)  # one lost race: the server itself is fine


async def test_connecting_to_a_server_that_is_not_there_is_unavailable(tmp_path: object) -> None:
    with pytest.raises(OSError) as info:
        await asyncpg.connect(host=f"{tmp_path}/no-server-here", user="postgres", database="x", timeout=5)
    assert is_transient(info.value) and is_unavailable(info.value)
