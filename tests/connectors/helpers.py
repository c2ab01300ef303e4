"""What the connector tests share: a source definition to vary, a virtual clock, and a mock
upstream's page bodies. The upstream is played by respx at a 127.0.0.1 address, so a request
the mocks do not answer fails the test instead of leaving the machine."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ledger.connectors.definition import SourceDefinition, from_builtins

BASE = "http://127.0.0.1:8999/api/v2"
URL = f"{BASE}/inventory"

# Loading the CA bundle costs tens of milliseconds a client, and the mocked upstream is plain
# http: every test's client shares one context.
_TLS = ssl.create_default_context()


def upstream_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=_TLS)


def definition(pagination: dict[str, Any] | None = None, **overrides: Any) -> SourceDefinition:
    """A valid definition mapping onto lab-inventory's columns; ``overrides`` replace its keys
    (None removes one)."""
    raw: dict[str, Any] = {
        "name": "chem-wms",
        "lab": "chem-lab",
        "policy": "lab-inventory",
        "base_url": BASE,
        "resource": "/inventory",
        "records": "data.items",
        "key": "id",
        "max_in_flight": 4,
        "pagination": pagination or {"type": "page", "page_size_param": "limit", "page_size": 10},
        "map": {"asset_id": "tag", "grant_code": "grant.code"},
    }
    for name, value in overrides.items():
        if value is None:
            raw.pop(name, None)
        else:
            raw[name] = value
    return from_builtins(raw)


def record(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": n, "tag": f"A-{n:05d}", "grant": {"code": f"NIH-R{n:04d}"}, **fields}


def body(records: list[Any], **extra: Any) -> bytes:
    """A page as the upstream sends it: exact bytes, so a test can hash what it served."""
    return json.dumps({"data": {"items": records}, **extra}).encode()


class VirtualClock:
    """The fetcher's clock in virtual time: ``sleep`` moves time on to when it would have woken,
    and only yields to the other tasks; nothing really waits."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t = max(self.t, self.t + seconds)
        await asyncio.sleep(0)


class Streamed(httpx.AsyncByteStream):
    """A body read as it arrives, as from a socket (respx reads a plain body before the client
    sees it)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
