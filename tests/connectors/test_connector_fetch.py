"""The fetcher against an upstream played by respx, on a virtual clock: the source-wide pause on
429 (Retry-After, RateLimit-Reset), the backoff of other transient failures with full jitter
within the attempts and the waiting budget, what is never retried, the auth header, and the
bound on requests in flight. stamina's testing mode is on (capped at each definition's own
attempts), so no retry sleeps; the pause sleeps on the virtual clock only."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
import stamina

from ledger.connectors.fetch import DEFAULT_PAUSE, Fetcher, FetchError
from ledger.connectors.paging import PageRequest, paginator_for
from tests.connectors.helpers import URL, Streamed, VirtualClock, body, definition, record, upstream_client

OK = body([record(1), record(2)])


@pytest.fixture(autouse=True)
def no_sleeping() -> Iterator[None]:
    with stamina.set_testing(True, attempts=20, cap=True):
        yield


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
async def client(upstream: respx.MockRouter) -> AsyncIterator[httpx.AsyncClient]:
    async with upstream_client() as c:
        yield c


def pages(n: int, **overrides: Any) -> list[PageRequest]:
    d = definition(**overrides)
    p = paginator_for(d, None)
    return [p.nth(i) for i in range(n)]


class CutMidBody(httpx.AsyncByteStream):
    """A body whose connection drops after its first bytes."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield OK[:10]
        raise self.error


class Rng:
    """random.uniform's stand-in: answers the top of the range and keeps each range asked."""

    def __init__(self) -> None:
        self.ranges: list[tuple[float, float]] = []

    def __call__(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return high


async def test_a_page_and_the_sha256_of_its_bytes(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    served = b'{"data": {"items": [{"id": 1, "cost": 18.50}]}}'
    upstream.get(URL).mock(return_value=httpx.Response(200, content=served, headers={"X-Trace": "t1"}))
    fetcher = Fetcher(client, definition(), env={}, clock=VirtualClock())
    [request] = pages(1)
    fetched = await fetcher.fetch(request)
    assert fetched.request == request
    assert fetched.sha256 == hashlib.sha256(served).hexdigest() and fetched.size == len(served)
    assert str(fetched.body["data"]["items"][0]["cost"]) == "18.50"  # the digits, never a float
    assert fetched.headers["x-trace"] == "t1"
    assert upstream.calls.last.request.headers["accept"] == "application/json"


async def test_429_pauses_every_request_of_the_source(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    clock = VirtualClock()
    sent: list[tuple[float, str]] = []
    limited: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append((clock.now(), request.url.params["page"]))
        if len(sent) == 3:
            limited.append(clock.now())
            return httpx.Response(429, headers={"Retry-After": "5"})
        return httpx.Response(200, content=OK)

    upstream.get(URL).mock(side_effect=answer)
    fetcher = Fetcher(client, definition(max_in_flight=4), env={}, clock=clock)
    fetched = await asyncio.gather(*(fetcher.fetch(r) for r in pages(10, max_in_flight=4)))

    assert [f.request.index for f in fetched] == list(range(10))  # the limited page too, in the end
    [t429] = limited
    assert len(sent) == 11
    inside = [(t, page) for t, page in sent[3:] if t429 <= t < t429 + 5]
    assert not inside, f"requests inside the window after the 429 at {t429}: {inside}"
    assert all(t == t429 + 5 for t, _ in sent[3:])  # and none waits longer than it was told
    assert sorted(page for _, page in sent).count("3") == 2  # the limited page was asked again


async def test_a_later_429_extends_the_pause_an_earlier_end_does_not_shorten_it(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    clock = VirtualClock()
    sent: list[float] = []
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "5"}),
            httpx.Response(429, headers={"Retry-After": "20"}),
            httpx.Response(429, headers={"Retry-After": "1"}),
        ]
    )

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return next(answers, httpx.Response(200, content=OK))

    upstream.get(URL).mock(side_effect=answer)
    fetcher = Fetcher(client, definition(), env={}, clock=clock)
    await fetcher.fetch(pages(1)[0])
    start = sent[0]
    assert [t - start for t in sent] == [0, 5, 25, 26]


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"RateLimit-Reset": "7"}, 7.0),
        ({"X-RateLimit-Reset": "12"}, 12.0),
        ({"Retry-After": "3", "RateLimit-Reset": "30"}, 3.0),  # Retry-After wins
        ({}, DEFAULT_PAUSE),
        ({"RateLimit-Reset": "soon"}, DEFAULT_PAUSE),
        ({"Retry-After": "999999"}, 3600.0),  # capped at an hour
    ],
)
async def test_the_pause_comes_from_the_headers(
    upstream: respx.MockRouter, client: httpx.AsyncClient, headers: dict[str, str], pause: float
) -> None:
    clock = VirtualClock()
    sent: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return httpx.Response(429, headers=headers) if len(sent) == 1 else httpx.Response(200, content=OK)

    upstream.get(URL).mock(side_effect=answer)
    fetcher = Fetcher(client, definition(max_wait_seconds=3600), env={}, clock=clock)
    await fetcher.fetch(pages(1)[0])
    assert sent[1] - sent[0] == pause


async def test_retry_after_as_an_http_date(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    clock = VirtualClock()
    sent: list[float] = []
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now())
        return httpx.Response(429, headers={"Retry-After": when}) if len(sent) == 1 else httpx.Response(200, content=OK)

    upstream.get(URL).mock(side_effect=answer)
    await Fetcher(client, definition(), env={}, clock=clock).fetch(pages(1)[0])
    assert 37 <= sent[1] - sent[0] <= 40


async def test_a_429_storm_ends_when_the_waiting_budget_is_spent(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    clock = VirtualClock()
    route = upstream.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "30"}))
    fetcher = Fetcher(client, definition(max_wait_seconds=100, attempts=20), env={}, clock=clock)
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(pages(1)[0])
    assert caught.value.code == "retries_exhausted" and caught.value.transient
    assert "429" in caught.value.message
    assert route.call_count == 4  # waits of 30, 60, 90 s fit in 100; a fourth would not


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
async def test_transient_statuses_are_retried_until_success(
    upstream: respx.MockRouter, client: httpx.AsyncClient, status: int
) -> None:
    route = upstream.get(URL).mock(
        side_effect=[httpx.Response(status), httpx.Response(status), httpx.Response(200, content=OK)]
    )
    fetcher = Fetcher(client, definition(), env={}, clock=VirtualClock())
    fetched = await fetcher.fetch(pages(1)[0])
    assert fetched.sha256 == hashlib.sha256(OK).hexdigest()
    assert route.call_count == 3 and fetcher.requests == 3


async def test_the_backoff_is_full_jitter_doubling(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    upstream.get(URL).mock(side_effect=[httpx.Response(503)] * 4 + [httpx.Response(200, content=OK)])
    rng = Rng()
    fetcher = Fetcher(client, definition(), env={}, clock=VirtualClock(), rng=rng)
    await fetcher.fetch(pages(1)[0])
    assert rng.ranges == [(0.0, 0.5), (0.0, 1.0), (0.0, 2.0), (0.0, 4.0)]


async def test_retries_end_after_the_attempts(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    route = upstream.get(URL).mock(return_value=httpx.Response(503))
    fetcher = Fetcher(client, definition(attempts=3), env={}, clock=VirtualClock())
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(pages(1)[0])
    assert caught.value.code == "retries_exhausted" and caught.value.transient
    assert "503" in caught.value.message and "3 failed attempts" in caught.value.message
    assert route.call_count == 3


async def test_retries_end_when_the_waits_would_pass_the_budget(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    route = upstream.get(URL).mock(return_value=httpx.Response(503))
    rng = Rng()  # waits of 0.5, then 1.0: 1.5 s, over the budget of 1 s
    fetcher = Fetcher(client, definition(attempts=20, max_wait_seconds=1), env={}, clock=VirtualClock(), rng=rng)
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(pages(1)[0])
    assert caught.value.code == "retries_exhausted"
    assert route.call_count == 2 and rng.ranges == [(0.0, 0.5), (0.0, 1.0)]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(200, stream=CutMidBody(httpx.RemoteProtocolError("peer closed connection mid-body"))),
        httpx.Response(200, stream=CutMidBody(httpx.ReadError("connection reset by peer"))),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
    ],
    ids=["cut-protocol", "cut-reset", "reset", "protocol", "refused", "timeout"],
)
async def test_connection_failures_are_retried(
    upstream: respx.MockRouter, client: httpx.AsyncClient, failure: httpx.Response | Exception
) -> None:
    route = upstream.get(URL).mock(side_effect=[failure, httpx.Response(200, content=OK)])
    fetched = await Fetcher(client, definition(), env={}, clock=VirtualClock()).fetch(pages(1)[0])
    assert route.call_count == 2
    assert fetched.sha256 == hashlib.sha256(OK).hexdigest()  # of the whole body, not the part cut


async def test_connection_failures_exhausted_name_the_error(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    upstream.get(URL).mock(side_effect=httpx.ReadError("connection reset by peer"))
    with pytest.raises(FetchError) as caught:
        await Fetcher(client, definition(attempts=2), env={}, clock=VirtualClock()).fetch(pages(1)[0])
    assert caught.value.code == "retries_exhausted"
    assert "ReadError: connection reset by peer" in caught.value.message


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(200, html="<html><body>Maintenance</body></html>"), "not_json"),
        (httpx.Response(200, content=b""), "not_json"),
        (httpx.Response(200, content=b'{"data": {"items": [1, 2'), "not_json"),
        (httpx.Response(404, json={"error": "no such resource"}), "http_error"),
        (httpx.Response(401), "http_error"),
        (httpx.Response(403), "http_error"),
        (httpx.Response(301, headers={"Location": "http://127.0.0.1:8999/elsewhere"}), "http_error"),
        (httpx.Response(204), "not_json"),
        (httpx.Response(200, stream=Streamed(b"\x00garbage"), headers={"Content-Encoding": "gzip"}), "bad_encoding"),
    ],
    ids=["html", "empty", "truncated-json", "404", "401", "403", "redirect", "204", "bad-gzip"],
)
async def test_what_is_never_retried(
    upstream: respx.MockRouter, client: httpx.AsyncClient, response: httpx.Response, code: str
) -> None:
    route = upstream.get(URL).mock(return_value=response)
    with pytest.raises(FetchError) as caught:
        await Fetcher(client, definition(), env={}, clock=VirtualClock()).fetch(pages(1)[0])
    assert caught.value.code == code and not caught.value.transient
    assert route.call_count == 1


async def test_html_is_named_in_the_error(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    upstream.get(URL).mock(return_value=httpx.Response(200, html="<html>login</html>"))
    with pytest.raises(FetchError) as caught:
        await Fetcher(client, definition(), env={}, clock=VirtualClock()).fetch(pages(1)[0])
    assert caught.value.message == "the response is not JSON (text/html, 18 bytes)"


async def test_a_body_over_the_limit_is_refused(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    big = body([record(n, description="x" * 200) for n in range(20)])
    assert len(big) > 2048
    route = upstream.get(URL).mock(return_value=httpx.Response(200, content=big))
    fetcher = Fetcher(client, definition(response_bytes_max=2048), env={}, clock=VirtualClock())
    with pytest.raises(FetchError) as caught:
        await fetcher.fetch(pages(1)[0])
    assert caught.value.code == "response_too_large" and "2048" in caught.value.message
    assert route.call_count == 1
    # One byte under is read whole.
    fetched = await Fetcher(client, definition(response_bytes_max=len(big)), env={}, clock=VirtualClock()).fetch(
        pages(1)[0]
    )
    assert fetched.size == len(big)


async def test_the_auth_header_is_read_from_its_variable(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    route = upstream.get(URL).mock(return_value=httpx.Response(200, content=OK))
    d = definition(auth_header="X-Api-Key", auth_env="WMS_KEY")
    fetcher = Fetcher(client, d, env={"WMS_KEY": "s3cret"}, clock=VirtualClock())
    await asyncio.gather(*(fetcher.fetch(r) for r in pages(3)))
    assert [call.request.headers["x-api-key"] for call in route.calls] == ["s3cret"] * 3
    assert "s3cret" not in d.as_dict().values()


@pytest.mark.parametrize("env", [{}, {"WMS_KEY": ""}, {"OTHER": "s3cret"}])
async def test_an_unset_auth_variable_is_refused_naming_it(client: httpx.AsyncClient, env: dict[str, str]) -> None:
    d = definition(auth_header="Authorization", auth_env="WMS_KEY")
    with pytest.raises(FetchError) as caught:
        Fetcher(client, d, env=env, clock=VirtualClock())
    assert caught.value.code == "auth_env_missing" and "WMS_KEY" in caught.value.message


async def test_no_auth_header_without_auth(upstream: respx.MockRouter, client: httpx.AsyncClient) -> None:
    route = upstream.get(URL).mock(return_value=httpx.Response(200, content=OK))
    await Fetcher(client, definition(), env={"WMS_KEY": "s3cret"}, clock=VirtualClock()).fetch(pages(1)[0])
    assert "s3cret" not in str(route.calls.last.request.headers)


@pytest.mark.parametrize("limit", [1, 3, 8])
async def test_never_more_than_max_in_flight(upstream: respx.MockRouter, client: httpx.AsyncClient, limit: int) -> None:
    now = 0
    most = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal now, most
        now += 1
        most = max(most, now)
        # Stay in flight while every other task runs as far as it can: an unbounded fetcher
        # would have all of them here at once.
        for _ in range(20):
            await asyncio.sleep(0)
        now -= 1
        return httpx.Response(200, content=OK)

    upstream.get(URL).mock(side_effect=answer)
    fetcher = Fetcher(client, definition(max_in_flight=limit), env={}, clock=VirtualClock())
    fetched = await asyncio.gather(*(fetcher.fetch(r) for r in pages(30, max_in_flight=limit)))
    assert len(fetched) == 30
    assert most == limit
    assert fetcher.in_flight_max == limit and fetcher.in_flight == 0 and fetcher.requests == 30


async def test_the_limit_holds_through_retries_and_a_pause(
    upstream: respx.MockRouter, client: httpx.AsyncClient
) -> None:
    clock = VirtualClock()
    now = most = calls = 0

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal now, most, calls
        calls += 1
        now += 1
        most = max(most, now)
        for _ in range(10):
            await asyncio.sleep(0)
        now -= 1
        if calls % 7 == 0:
            return httpx.Response(429, headers={"Retry-After": "2"})
        if calls % 5 == 0:
            return httpx.Response(503)
        return httpx.Response(200, content=OK)

    upstream.get(URL).mock(side_effect=answer)
    fetcher = Fetcher(client, definition(max_in_flight=4, attempts=10), env={}, clock=clock)
    fetched = await asyncio.gather(*(fetcher.fetch(r) for r in pages(40, max_in_flight=4)))
    assert len(fetched) == 40 and calls > 40
    assert most == 4 and fetcher.in_flight_max == 4
