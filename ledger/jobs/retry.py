"""The one retry policy for jobs: which failures are retried, how long to wait, when to stop.

Built on pgqueuer's retry support: a job that raises ``RetryRequested(delay)`` goes back to the
queue with ``execute_after`` pushed out by ``delay``, so the wait survives the worker (another
worker, or this one restarted, picks it up when it is due) and the import resumes from its
staging checkpoint. What counts as transient is ledger.db.faults'; everything else is a bug or
a refusal and ends the import at once.

Waits are "full jitter" exponential backoff: the n-th retry waits a uniformly random time in
[0, min(cap, base * 2^(n-1))], which spreads the imports that one PostgreSQL restart failed
together instead of sending them back all at once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

import msgspec
from pgqueuer.errors import RetryRequested

from ledger.config import Settings
from ledger.db.faults import is_transient

__all__ = ["RetryPolicy", "RetryRequested", "is_transient"]


class RetryPolicy(msgspec.Struct, frozen=True):
    attempts: int  # in all, the first included
    base_seconds: float
    max_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=settings.job_retry_attempts,
            base_seconds=settings.job_retry_base_seconds,
            max_seconds=settings.job_retry_max_seconds,
        )

    def exhausted(self, failed: int) -> bool:
        """True when ``failed`` attempts have failed and none is left."""
        return failed >= self.attempts

    def delay(self, failed: int, *, uniform: Callable[[float, float], float] = random.uniform) -> timedelta:
        """The wait before the next attempt, after ``failed`` (>= 1) attempts have failed."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(failed - 1, 0))
        return timedelta(seconds=uniform(0.0, ceiling))
