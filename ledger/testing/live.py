"""The whole service served over real HTTP on 127.0.0.1, for tests that drive it from outside,
synchronously (a fuzzer speaks HTTP through a client of its own, which would block the test's
event loop): the tokens of ledger.testing.TOKENS and, like ``running_api``, a worker in the
process, with uvicorn in a thread (ledger.testing.server).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from litestar import Litestar

from ledger.api.app import create_app
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.pool import connect
from ledger.jobs.worker import running_worker
from ledger.testing.api import create_tokens
from ledger.testing.server import serving

__all__ = ["Served", "run_aside", "serving_api"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Served:
    base_url: str
    # A bearer token per name of ledger.testing.TOKENS.
    tokens: dict[str, str]
    # The app being served, for what its routes say about themselves (never to be called).
    app: Litestar


def run_aside(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end on an event loop in a thread of its own: a synchronous
    fixture may run while the test session's loop is current, and this leaves it alone."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _tokens(database_url: str) -> dict[str, str]:
    conn = await connect(database_url)
    try:
        return await create_tokens(conn)
    finally:
        await conn.close()


@contextlib.contextmanager
def serving_api(settings: Settings, database_url: str, *, policies: PolicyRegistry | None = None) -> Iterator[Served]:
    """The app on ``database_url``, listening on a free port of 127.0.0.1 until the context ends."""
    tokens = run_aside(_tokens(database_url))
    loaded = policies or PolicyRegistry.load_dir(settings.policies_dir)
    background: list[Callable[[], AbstractAsyncContextManager[Any]]] = [
        lambda: running_worker(settings, database_url, loaded)
    ]
    app = create_app(settings, database_url, policies=loaded, background=background)
    with serving(app, start_timeout=60) as port:
        yield Served(base_url=f"http://127.0.0.1:{port}", tokens=tokens, app=app)
