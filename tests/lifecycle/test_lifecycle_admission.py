"""Admission under concurrency: the queue limit holds for simultaneous submissions (counted and
inserted atomically), not only for submissions one at a time.

In-process: the app on its own database with no worker consuming the queue, driven through
httpx's ASGI transport on the test's own event loop, so that the eight requests really are in
flight together (litestar's test client would run them one after the other)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from ledger.api.app import create_app
from ledger.bench.manifest import HEADER, generate_rows
from ledger.config import Settings
from ledger.db.pool import connect
from ledger.db.tokens import create_token
from tests.lifecycle.helpers import ROOT

QUEUED_MAX = 4
SUBMISSIONS = 8


@asynccontextmanager
async def _client(database_url: str, home: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan is entered and left in the same task (it holds an anyio cancel
    scope), so this is a context of the test, not a fixture."""
    settings = Settings(
        database_url=database_url,
        home=home,
        policies_dir=ROOT / "policies",
        imports_queued_max=QUEUED_MAX,
        # The queue's limit is under test, not the cap on one token's uploads at once.
        uploads_per_token_max=SUBMISSIONS + 1,
    )
    conn = await connect(database_url)
    try:
        token, _ = await create_token(conn, role="lab_manager", labs=["chem-lab"])
    finally:
        await conn.close()
    app = create_app(settings, database_url)
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # litestar's ASGI types are narrower
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://127.0.0.1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as http:
            yield http


def _small_manifest(seed: int) -> bytes:
    rows = [",".join(row) for row in generate_rows(3, seed=seed)]
    return ("\n".join([HEADER, *rows]) + "\n").encode()


async def _submit(client: httpx.AsyncClient, content: bytes, name: str) -> httpx.Response:
    return await client.post("/imports", files={"file": (name, content, "text/csv")})


async def test_eight_simultaneous_submissions_at_a_limit_of_four_admit_exactly_four(
    database_url: str, tmp_path: Path, db: Any
) -> None:
    async with _client(database_url, tmp_path) as client:
        await _check_admission(client, db)


async def _check_admission(client: httpx.AsyncClient, db: Any) -> None:
    files = [_small_manifest(seed) for seed in range(1, SUBMISSIONS + 1)]
    assert len(set(files)) == SUBMISSIONS  # different files: no idempotent replay among them
    responses = await asyncio.gather(*(_submit(client, content, f"m{i}.csv") for i, content in enumerate(files)))
    codes = sorted(r.status_code for r in responses)
    answers = [(r.status_code, r.text) for r in responses]
    assert codes == [202] * QUEUED_MAX + [429] * (SUBMISSIONS - QUEUED_MAX), answers
    for response in responses:
        if response.status_code == 429:
            assert response.json()["code"] == "too_many_imports", response.text
            assert int(response.headers["Retry-After"]) >= 1, response.headers
        else:
            task_id = response.json()["task_id"]
            assert (await client.get(f"/imports/{task_id}")).json()["status"] == "queued"
    # The refused ones left nothing behind; the admitted ones are all there.
    assert await db.fetchval("SELECT count(*) FROM imports") == QUEUED_MAX
    # And once full, a submission on its own is refused too.
    late = await _submit(client, _small_manifest(SUBMISSIONS + 1), "late.csv")
    assert late.status_code == 429, late.text
