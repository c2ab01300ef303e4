"""HTTP for one source: at most max_in_flight requests at once, a pause of the whole source on
429, and backoff with full jitter on other transient failures.

A 429 is the upstream saying the source as a whole is too fast, not one request: every request
of the source, the retried one and every other, waits until its Retry-After (or
RateLimit-Reset) has passed, so no request lands inside the window. Other transient failures
(5xx, a refused or reset connection, a timeout, a body cut short) are retried by stamina with
full jitter, each request on its own. The waits of one request add up to at most
max_wait_seconds; past that, or after ``attempts``, the page has failed.

The clock is injectable: the tests run the pause on a virtual clock and stamina in its testing
mode, so no test really sleeps.
"""

from __future__ import annotations

import asyncio
import decimal
import hashlib
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import httpx
import msgspec
import stamina

from ledger.client.retry import full_jitter, retry_after
from ledger.connectors.definition import SourceDefinition
from ledger.connectors.paging import PageRequest

__all__ = ["Clock", "FetchError", "Fetched", "Fetcher", "RealClock"]

# Decimals keep their digits: a cost of 18.50 never passes through a float on its way to the
# policy (the JSON Lines reader keeps numbers' text for the same reason).
_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)

# The pause after a 429 that names no Retry-After or RateLimit-Reset.
DEFAULT_PAUSE = 1.0


class Clock(Protocol):
    def now(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FetchError(Exception):
    """A page that could not be had. ``code`` is stable (docs/connectors.md); ``transient``
    errors were retried until the attempts or the waiting budget ran out."""

    def __init__(self, code: str, message: str, *, transient: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient
        self.retry_after = retry_after


class Fetched(msgspec.Struct, frozen=True):
    request: PageRequest
    body: Any
    headers: dict[str, str]
    sha256: str  # of the response body's bytes (after any Content-Encoding is undone)
    size: int


class _Backoff:
    """stamina's hook for one page: transient errors with full jitter, except a 429, whose wait
    the source's pause already takes; within the waiting budget."""

    def __init__(self, budget: float, rng: Callable[[float, float], float]) -> None:
        self.budget = budget
        self.waited = 0.0
        self.failures = 0
        self.rng = rng
        self.last: FetchError | None = None

    def __call__(self, exc: Exception) -> bool | float:
        if isinstance(exc, httpx.TransportError):
            self.last = FetchError("connection", f"{type(exc).__name__}: {exc}".rstrip(": "), transient=True)
        elif isinstance(exc, FetchError) and exc.transient:
            self.last = exc
        else:
            return False
        self.failures += 1
        wait = 0.0 if self.last.retry_after is not None else full_jitter(self.failures, self.rng)
        budget_wait = self.last.retry_after if self.last.retry_after is not None else wait
        if self.waited + budget_wait > self.budget:
            return False
        self.waited += budget_wait
        return wait


class Fetcher:
    def __init__(
        self,
        client: httpx.AsyncClient,
        definition: SourceDefinition,
        *,
        env: Mapping[str, str],
        clock: Clock | None = None,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.client = client
        self.definition = definition
        self.clock = clock or RealClock()
        self.rng = rng
        self.limit = asyncio.Semaphore(definition.max_in_flight)
        self.paused_until = 0.0
        self.in_flight = 0
        self.in_flight_max = 0  # the most requests that were ever in flight at once
        self.requests = 0
        self.headers = {"Accept": "application/json"}
        if definition.auth_header is not None and definition.auth_env is not None:
            secret = env.get(definition.auth_env)
            if not secret:
                raise FetchError(
                    "auth_env_missing", f"the variable {definition.auth_env} (auth_env) is not set or is empty"
                )
            self.headers[definition.auth_header] = secret

    async def fetch(self, request: PageRequest) -> Fetched:
        backoff = _Backoff(self.definition.max_wait_seconds, self.rng)
        try:
            async for attempt in stamina.retry_context(on=backoff, attempts=self.definition.attempts, timeout=None):
                with attempt:
                    return await self._once(request)
        except (FetchError, httpx.TransportError) as exc:
            last = backoff.last
            if isinstance(exc, FetchError) and not exc.transient:
                raise
            assert last is not None
            raise FetchError(
                "retries_exhausted",
                f"gave up after {backoff.failures} failed attempts and {backoff.waited:.1f} s of waiting: "
                + last.message,
                transient=True,
            ) from None
        raise AssertionError("stamina ends with the last error")  # pragma: no cover

    async def _once(self, request: PageRequest) -> Fetched:
        async with self.limit:
            while (wait := self.paused_until - self.clock.now()) > 0:
                await self.clock.sleep(wait)
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
            self.requests += 1
            try:
                return await self._get(request)
            finally:
                self.in_flight -= 1

    async def _get(self, request: PageRequest) -> Fetched:
        try:
            return await self._read(request)
        except httpx.DecodingError as exc:
            # A body its Content-Encoding does not decode (a cut connection is a TransportError,
            # and retried): the upstream's fault, every time it is asked.
            raise FetchError("bad_encoding", f"the response's content encoding does not decode: {exc}") from None

    async def _read(self, request: PageRequest) -> Fetched:
        d = self.definition
        async with self.client.stream("GET", request.url, headers=self.headers, timeout=d.timeout_seconds) as response:
            status = response.status_code
            if status == 429:
                pause = _pause_seconds(response.headers)
                self.paused_until = max(self.paused_until, self.clock.now() + pause)
                message = f"429 from the upstream; paused {pause:g} s"
                raise FetchError("rate_limited", message, transient=True, retry_after=pause)
            if status >= 500 or status in (408,):
                raise FetchError("upstream_error", f"{status} {response.reason_phrase}".strip(), transient=True)
            if status >= 400 or status < 200 or status >= 300:
                raise FetchError("http_error", f"the upstream answered {status} {response.reason_phrase}".strip())
            digest = hashlib.sha256()
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > d.response_bytes_max:
                    raise FetchError(
                        "response_too_large", f"the response is over {d.response_bytes_max} bytes (response_bytes_max)"
                    )
                digest.update(chunk)
                chunks.append(chunk)
            headers = dict(response.headers.items())
        content = b"".join(chunks)
        try:
            body = _decoder.decode(content)
        except msgspec.DecodeError:
            kind = headers.get("content-type", "no content type").split(";")[0]
            raise FetchError("not_json", f"the response is not JSON ({kind}, {size} bytes)") from None
        return Fetched(request, body, headers, digest.hexdigest(), size)


def _pause_seconds(headers: httpx.Headers) -> float:
    hint = retry_after(headers.get("Retry-After"))
    if hint is None:
        # RateLimit-Reset (draft-ietf-httpapi-ratelimit-headers): seconds until the quota resets.
        reset = headers.get("RateLimit-Reset") or headers.get("X-RateLimit-Reset")
        if reset is not None and reset.strip().isdigit():
            hint = float(reset.strip())
    if hint is None:
        return DEFAULT_PAUSE
    return min(hint, 3600.0)
