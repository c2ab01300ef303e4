"""Speaking the service's HTTP contract in tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

HEADER = "asset_id,grant_code,category,quantity,location,acquisition_date,cas_number,hazard_class,unit_cost,description"


def manifest(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


class Api:
    """A thin test client speaking the service's HTTP contract."""

    def __init__(self, client: AsyncTestClient[Any], tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def get(self, path: str, role: str = "admin", **kw: Any) -> httpx.Response:
        return await self.client.get(path, headers=self.auth(role), **kw)

    async def submit(
        self,
        content: bytes,
        *,
        role: str = "manager",
        filename: str = "manifest.csv",
        headers: dict[str, str] | None = None,
        **fields: str,
    ) -> httpx.Response:
        return await self.client.post(
            "/imports",
            headers={**self.auth(role), **(headers or {})},
            files={"file": (filename, content, "text/csv")},
            data=fields,
        )

    async def wait(self, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body: dict[str, Any] = (await self.get(f"/imports/{task_id}")).json()
            # A done import's rows reach GET /assets when the projection has applied them.
            if body["status"] in ("failed", "cancelled") or (
                body["status"] == "done" and body.get("assets_current") is not False
            ):
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"import {task_id} still {body['status']} after {timeout}s")
            await asyncio.sleep(0.05)

    async def run(self, content: bytes, **kw: Any) -> dict[str, Any]:
        response = await self.submit(content, **kw)
        assert response.status_code in (200, 202), response.text
        return await self.wait(response.json()["task_id"])

    async def rows(self, task_id: str, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            body = (await self.get(f"/imports/{task_id}/rows", params=q)).json()
            items += body["items"]
            cursor = body["next"]
            if not cursor:
                return items
