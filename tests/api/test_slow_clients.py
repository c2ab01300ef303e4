"""Clients that hold the server up: bodies that stall or trickle (408 ``request_timeout``, the
connection closed, nothing left behind), and more uploads at once than a token may send (429
``too_many_uploads`` before the body is read). On a real uvicorn server on 127.0.0.1, with
raw sockets, since only a real server has connections to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.db.pool import connect
from ledger.testing import create_tokens, manifest
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.server import serving

BOUNDARY = "slowclientboundary"
PREAMBLE = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="m.csv"\r\nContent-Type: text/csv\r\n\r\n'
).encode()
EPILOGUE = f"\r\n--{BOUNDARY}--\r\n".encode()
ROW = "CHEM-{:04d},NSF-CHE2201234,equipment,1,CHM-101,2024-01-15,,,10.00,probe"


@dataclass
class Served:
    port: int
    tokens: dict[str, str]
    spool: Path
    database_url: str

    def http(self, role: str | None = None) -> httpx.AsyncClient:
        headers = {} if role is None else {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", headers=headers, timeout=10)

    def spooled(self) -> list[Path]:
        return sorted(self.spool.glob("upload-*")) if self.spool.is_dir() else []

    async def imports(self) -> int:
        conn = await connect(self.database_url)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM imports")
            return count
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def served(database_url: str, home: Path, **overrides: Any) -> AsyncIterator[Served]:
    """The API alone (no worker: nothing here needs an import to run) on a real server."""
    conn = await connect(database_url)
    try:
        tokens = await create_tokens(conn)
    finally:
        await conn.close()
    settings = Settings(database_url=database_url, home=home, policies_dir=POLICIES_DIR, **overrides)
    with serving(create_app(settings, database_url)) as port:
        yield Served(port=port, tokens=tokens, spool=settings.spool_dir, database_url=database_url)


class Raw:
    """One HTTP/1.1 request written by hand, a byte at a time if need be."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def start(
        cls,
        port: int,
        path: str,
        *,
        token: str,
        length: int,
        content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
    ) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
        )
        writer.write(head.encode())
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return not self.writer.is_closing()

    async def drip(self, data: bytes, every: float) -> None:
        for i in range(len(data)):
            if not await self.send(data[i : i + 1]):
                return
            await asyncio.sleep(every)

    async def response(self, within: float) -> tuple[int, dict[str, str], Any]:
        try:
            head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), within)
        except TimeoutError:
            raise AssertionError(f"no answer within {within} s") from None
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)}
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["content-length"])), within)
        return status, headers, json.loads(body)

    async def closed_by_server(self, within: float = 5.0) -> bool:
        try:
            return await asyncio.wait_for(self.reader.read(1), within) == b""
        except ConnectionError:
            return True

    async def close(self) -> None:
        # Awaited: the server's end must see the connection go before the test ends.
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def _poll_health(client: httpx.AsyncClient, stop: asyncio.Event, latencies: list[float]) -> None:
    while not stop.is_set():
        started = time.monotonic()
        response = await client.get("/health/live")
        assert response.status_code == 200
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.1)


async def test_a_trickled_upload_is_cut_off_while_other_requests_are_served(database_url: str, tmp_path: Path) -> None:
    # One byte every half second: never idle for long, far below the minimum rate.
    async with served(database_url, tmp_path, body_idle_seconds=2.0, body_rate_grace_seconds=1.0) as server:
        content = manifest(*(ROW.format(i) for i in range(40)))
        upload = await Raw.start(
            server.port, "/imports", token=server.tokens["manager"], length=len(PREAMBLE) + len(content) + len(EPILOGUE)
        )
        started = time.monotonic()
        assert await upload.send(PREAMBLE)
        dripping = asyncio.create_task(upload.drip(content, every=0.5))
        stop, latencies = asyncio.Event(), list[float]()
        async with server.http() as client:
            polling = asyncio.create_task(_poll_health(client, stop, latencies))
            try:
                while not server.spooled():
                    assert time.monotonic() - started < 1, "the upload did not reach the spool"
                    await asyncio.sleep(0.02)
                assert len(server.spooled()) == 1
                status, headers, body = await upload.response(within=5)
                elapsed = time.monotonic() - started
            finally:
                stop.set()
                await polling
                dripping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await dripping
        assert status == 408
        assert body["code"] == "request_timeout" and "slower than 1024 bytes per second" in body["message"]
        # Cut after the grace period (1 s), well within the idle bound and long before the
        # 40 rows would have trickled in (a minute).
        assert elapsed < 3.0
        assert headers["connection"] == "close" and await upload.closed_by_server()
        await upload.close()
        assert len(latencies) >= 5 and max(latencies) < 1.0, latencies
        assert server.spooled() == []
        assert await server.imports() == 0


async def test_a_stalled_upload_is_cut_off_after_the_idle_time(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, body_idle_seconds=1.0, body_rate_grace_seconds=60.0) as server:
        upload = await Raw.start(server.port, "/imports", token=server.tokens["manager"], length=10_000)
        started = time.monotonic()
        assert await upload.send(PREAMBLE + b"asset_id,grant_code")
        status, headers, body = await upload.response(within=5)
        elapsed = time.monotonic() - started
        assert status == 408 and body["code"] == "request_timeout"
        assert body["message"].startswith("no part of the request body arrived for 1 s")
        assert 0.9 <= elapsed < 3.0
        assert headers["connection"] == "close" and await upload.closed_by_server()
        await upload.close()
        assert server.spooled() == []
        assert await server.imports() == 0


async def test_every_body_is_bounded_not_only_uploads(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, body_idle_seconds=1.0) as server, server.http("admin") as admin:
        before = len((await admin.get("/tokens")).json())
        stalled = await Raw.start(
            server.port, "/tokens", token=server.tokens["admin"], length=200, content_type="application/json"
        )
        assert await stalled.send(b'{"role": "auditor", ')
        status, headers, body = await stalled.response(within=5)
        assert status == 408 and body["code"] == "request_timeout"
        assert headers["connection"] == "close" and await stalled.closed_by_server()
        await stalled.close()
        assert len((await admin.get("/tokens")).json()) == before


async def test_a_body_that_pauses_at_the_start_and_then_flows_is_accepted(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path, body_idle_seconds=1.0, body_rate_grace_seconds=1.0) as server:
        content = manifest(*(ROW.format(i) for i in range(600)))  # about 48 kB
        body = PREAMBLE + content + EPILOGUE
        upload = await Raw.start(server.port, "/imports", token=server.tokens["manager"], length=len(body))
        await asyncio.sleep(0.6)  # a pause shorter than the idle time, before any byte
        step = len(body) // 6 + 1
        for i in range(0, len(body), step):  # then in pieces over longer than the grace period
            assert await upload.send(body[i : i + step])
            await asyncio.sleep(0.25)
        status, _, answer = await upload.response(within=10)
        await upload.close()
        assert status == 202, answer
        assert await server.imports() == 1


async def test_a_token_has_at_most_four_uploads_in_progress(database_url: str, tmp_path: Path) -> None:
    async with served(database_url, tmp_path) as server:
        assert Settings().uploads_per_token_max == 4
        token = server.tokens["manager"]
        slow = []
        for _ in range(4):
            upload = await Raw.start(server.port, "/imports", token=token, length=100_000)
            assert await upload.send(PREAMBLE + b"asset_id,")
            slow.append(upload)
        deadline = time.monotonic() + 5
        while len(server.spooled()) < 4:
            assert time.monotonic() < deadline, "the four uploads did not all start"
            await asyncio.sleep(0.02)

        # The fifth is refused at once, without a byte of its body being sent.
        fifth = await Raw.start(server.port, "/imports", token=token, length=100_000)
        status, headers, body = await fifth.response(within=5)
        assert status == 429 and body["code"] == "too_many_uploads"
        assert int(headers["retry-after"]) >= 1
        assert headers["connection"] == "close" and await fifth.closed_by_server()
        await fifth.close()

        # Another token is not held up by this one's uploads.
        files = {"file": ("m.csv", manifest(ROW.format(1)), "text/csv")}
        async with server.http("multi") as other:
            assert (await other.post("/imports", files=files, data={"lab": "chem-lab"})).status_code == 202

        # An upload that ends (here its client gives up) frees its slot.
        await slow.pop().close()
        async with server.http("manager") as manager:
            deadline = time.monotonic() + 5
            files = {"file": ("m.csv", manifest(ROW.format(2)), "text/csv")}
            while (response := await manager.post("/imports", files=files)).status_code == 429:
                assert time.monotonic() < deadline, "the slot of the abandoned upload was not freed"
                await asyncio.sleep(0.05)
            assert response.status_code == 202, response.text
        for upload in slow:
            await upload.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"LEDGER_BODY_IDLE_SECONDS": "0"}, "LEDGER_BODY_IDLE_SECONDS"),
        ({"LEDGER_BODY_IDLE_SECONDS": "soon"}, "LEDGER_BODY_IDLE_SECONDS"),
        ({"LEDGER_BODY_MIN_BYTES_PER_SECOND": "-1"}, "LEDGER_BODY_MIN_BYTES_PER_SECOND"),
        ({"LEDGER_BODY_RATE_GRACE_SECONDS": "-1"}, "LEDGER_BODY_RATE_GRACE_SECONDS"),
        ({"LEDGER_UPLOADS_PER_TOKEN_MAX": "0"}, "LEDGER_UPLOADS_PER_TOKEN_MAX"),
    ],
)
def test_body_and_upload_settings_are_checked(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(env)


def test_body_and_upload_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "LEDGER_BODY_IDLE_SECONDS": "1.5",
            "LEDGER_BODY_MIN_BYTES_PER_SECOND": "0",
            "LEDGER_BODY_RATE_GRACE_SECONDS": "2",
            "LEDGER_UPLOADS_PER_TOKEN_MAX": "7",
        }
    )
    assert (settings.body_idle_seconds, settings.body_min_bytes_per_second) == (1.5, 0)
    assert (settings.body_rate_grace_seconds, settings.uploads_per_token_max) == (2.0, 7)
