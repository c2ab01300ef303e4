"""The service's HTTP contract for tests: a token per role, manifests, an app with an
in-process worker, and a client that submits and waits for imports.

The app fixtures in tests/conftest.py wrap these.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.core import roles
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import import_statuses
from ledger.db.labs import add_lab
from ledger.db.pool import Executor, connect
from ledger.db.tokens import create_token
from ledger.jobs.worker import running_worker

__all__ = ["HEADER", "TOKENS", "Api", "create_tokens", "manifest", "running_api"]

HEADER = "asset_id,grant_code,category,quantity,location,acquisition_date,cas_number,hazard_class,unit_cost,description"

# The tokens every test app gets, by the name tests ask for them: (role, labs).
TOKENS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": (roles.ADMIN, ()),
    "manager": (roles.LAB_MANAGER, ("chem-lab",)),
    "manager2": (roles.LAB_MANAGER, ("bio-lab",)),
    "multi": (roles.LAB_MANAGER, ("chem-lab", "bio-lab")),
    "officer": (roles.COMPLIANCE_OFFICER, ()),
    "auditor": (roles.AUDITOR, ()),
}


def manifest(*rows: str, header: str = HEADER) -> bytes:
    """A CSV manifest of ``rows`` (each a line of cells) under ``header``."""
    return ("\n".join([header, *rows]) + "\n").encode()


async def create_tokens(conn: Executor) -> dict[str, str]:
    """A bearer token for each of TOKENS, by name, the labs they name registered first."""
    for lab in sorted({lab for _, labs in TOKENS.values() for lab in labs}):
        await add_lab(conn, lab, None)
    return {name: (await create_token(conn, role=role, labs=labs))[0] for name, (role, labs) in TOKENS.items()}


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

    async def wait(self, task_id: str, within: float = 30.0) -> dict[str, Any]:
        """The import's status once it has ended and, when done, its rows are in GET /assets;
        an AssertionError after ``within`` seconds."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            body: dict[str, Any] = (await self.get(f"/imports/{task_id}")).json()
            # A done import's rows reach GET /assets when the projection has applied them.
            if body["status"] in import_statuses.TERMINAL and (
                body["status"] != import_statuses.DONE or body.get("assets_current") is not False
            ):
                return body
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"import {task_id} still {body['status']} after {within}s")
            await asyncio.sleep(0.05)

    async def run(self, content: bytes, **kw: Any) -> dict[str, Any]:
        """Submit and wait for the import to end."""
        response = await self.submit(content, **kw)
        assert response.status_code in (200, 202), response.text
        return await self.wait(response.json()["task_id"])

    async def rows(self, task_id: str, **params: Any) -> list[dict[str, Any]]:
        """Every row outcome of the import, through all its pages."""
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            q = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
            body = (await self.get(f"/imports/{task_id}/rows", params=q)).json()
            items += body["items"]
            cursor = body["next"]
            if not cursor:
                return items


@contextlib.asynccontextmanager
async def running_api(
    settings: Settings,
    database_url: str,
    *,
    policies: PolicyRegistry | None = None,
    inline_worker: bool = True,
) -> AsyncIterator[Api]:
    """The app on ``database_url`` with the TOKENS created, and (``inline_worker``) a worker in
    this process, for as long as the context lasts."""
    conn = await connect(database_url)
    try:
        tokens = await create_tokens(conn)
    finally:
        await conn.close()
    loaded = policies or PolicyRegistry.load_dir(settings.policies_dir)
    background: list[Callable[[], AbstractAsyncContextManager[Any]]] = []
    if inline_worker:
        background.append(lambda: running_worker(settings, database_url, loaded))
    app = create_app(settings, database_url, policies=loaded, background=background)
    async with AsyncTestClient(app=app, timeout=60) as client:
        yield Api(client, tokens)
