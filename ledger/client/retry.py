"""What is worth retrying, and how long to wait: exponential backoff with full jitter, never
less than the server's Retry-After, within a budget of waiting per file.

The loop itself is stamina's (a maintained retry library whose testing mode lets the tests run
without sleeping); this module only decides, through stamina's backoff hook, whether an error
is transient and how long to wait before the next attempt.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = [
    "ATTEMPTS",
    "AuthFailed",
    "Backoff",
    "Refused",
    "Transient",
    "check",
    "full_jitter",
    "retry_after",
]

# At most this many attempts of each step of a file (delivery, following the import).
ATTEMPTS = 8
# Full jitter: a wait drawn from 0 to min(WAIT_CAP, WAIT_BASE * 2^(n-1)) seconds.
WAIT_BASE = 0.5
WAIT_CAP = 60.0


class Transient(Exception):
    """A failure that may pass: the connection, a 5xx, a 429. ``retry_after`` is the server's
    lower bound on the wait, if it gave one."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Refused(Exception):
    """The server answered that the request is wrong (a 4xx other than 401, 403, 429)."""

    def __init__(self, message: str, status: int, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class AuthFailed(Refused):
    """401 or 403: the token is missing, wrong, expired or lacks the role (exit 4)."""


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _message(response: httpx.Response) -> tuple[str, str | None]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        nested = body.get("error")
        error: dict[str, Any] = nested if isinstance(nested, dict) else body
        code = error.get("code") if isinstance(error.get("code"), str) else None
        text = error.get("message") or error.get("detail")
        if isinstance(text, str):
            return f"{response.status_code} {text}", code
    return f"{response.status_code} {response.reason_phrase}".strip(), None


def check(response: httpx.Response, *, ok: tuple[int, ...] = (200, 201, 202, 204)) -> httpx.Response:
    """``response`` if its status is in ``ok``; else the error it is (the body is read)."""
    if response.status_code in ok:
        return response
    message, code = _message(response)
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code == 429 or response.status_code >= 500:
        raise Transient(f"{where}: {message}", retry_after(response.headers.get("Retry-After")))
    if response.status_code in (401, 403):
        raise AuthFailed(f"{where}: {message}", response.status_code, code)
    raise Refused(f"{where}: {message}", response.status_code, code)


def full_jitter(attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
    """The wait after failed attempt ``attempt`` (1-based), "full jitter" (AWS Architecture
    Blog, Exponential Backoff and Jitter): spreads clients that failed together apart."""
    return rng(0.0, min(WAIT_CAP, WAIT_BASE * 2 ** (attempt - 1)))


class Backoff:
    """stamina's backoff hook for one file: retries Transient (and connection errors) with
    full jitter but never sooner than Retry-After, while the waits add up to at most
    ``max_wait`` seconds; anything else, or a wait past the budget, ends the retries."""

    def __init__(self, max_wait: float, rng: Callable[[float, float], float] = random.uniform) -> None:
        self.max_wait = max_wait
        self.waited = 0.0
        self.failures = 0
        self.rng = rng
        # The planned waits, for the tests (stamina's testing mode sleeps none of them).
        self.waits: list[float] = []

    def __call__(self, exc: Exception) -> bool | float:
        if isinstance(exc, httpx.TransportError):
            hint = None
        elif isinstance(exc, Transient):
            hint = exc.retry_after
        else:
            return False
        self.failures += 1
        wait = max(full_jitter(self.failures, self.rng), hint or 0.0)
        if self.waited + wait > self.max_wait:
            return False
        self.waited += wait
        self.waits.append(wait)
        return wait
