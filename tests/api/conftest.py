"""An app per test on its own database, with an in-process worker and a token per role."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.db.tokens import create_token

ROOT = Path(__file__).resolve().parents[2]

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
            if body["status"] in ("done", "failed", "cancelled"):
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


@pytest.fixture
def batch_rows() -> int:
    return 10_000


@pytest.fixture
async def api(database_url: str, tmp_path: Path, batch_rows: int) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=database_url,
        home=tmp_path,
        policies_dir=ROOT / "policies",
        batch_rows_max=batch_rows,
    )
    from ledger.db.pool import connect

    conn = await connect(database_url)
    tokens = {
        "admin": (await create_token(conn, role="admin"))[0],
        "manager": (await create_token(conn, role="lab_manager", labs=["chem-lab"]))[0],
        "manager2": (await create_token(conn, role="lab_manager", labs=["bio-lab"]))[0],
        "multi": (await create_token(conn, role="lab_manager", labs=["chem-lab", "bio-lab"]))[0],
        "officer": (await create_token(conn, role="compliance_officer"))[0],
        "auditor": (await create_token(conn, role="auditor"))[0],
    }
    await conn.close()
    app = create_app(settings, database_url, inline_worker=True)
    async with AsyncTestClient(app=app, timeout=60) as client:
        yield Api(client, tokens)
