"""An app per test on its own database, with an in-process worker and a token per role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.tokens import create_token
from ledger.jobs.worker import running_worker
from tests.api.helpers import Api

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch_rows() -> int:
    return 10_000


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def inline_worker() -> bool:
    return True


@pytest.fixture
async def api(
    database_url: str, tmp_path: Path, batch_rows: int, settings_overrides: dict[str, Any], inline_worker: bool
) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=database_url,
        home=tmp_path,
        policies_dir=ROOT / "policies",
        batch_rows_max=batch_rows,
        **settings_overrides,
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
    policies = PolicyRegistry.load_dir(settings.policies_dir)
    background = [lambda: running_worker(settings, database_url, policies)] if inline_worker else []
    app = create_app(settings, database_url, policies=policies, background=background)
    async with AsyncTestClient(app=app, timeout=60) as client:
        yield Api(client, tokens)
