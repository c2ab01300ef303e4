"""The Litestar application factory. Settings come in as arguments, never from import time."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from ledger.api.auth import PUBLIC_PATHS, TokenAuthMiddleware
from ledger.api.controllers.assets import AssetsController
from ledger.api.controllers.audit import AuditController
from ledger.api.controllers.health import HealthController
from ledger.api.controllers.imports import ImportsController
from ledger.api.controllers.policies import PoliciesController
from ledger.api.controllers.quarantine import QuarantineController
from ledger.api.controllers.tokens import TokensController
from ledger.api.deps import dependencies
from ledger.api.errors import exception_handlers
from ledger.api.headers import security_headers
from ledger.api.inputs import validation_error
from ledger.api.schema_pages import assets_router, render_plugins
from ledger.api.state import AppState
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.checkpoints import register_key
from ledger.db.pool import create_pool
from ledger.services.signing import load_signing

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    database_url: str,
    *,
    policies: PolicyRegistry | None = None,
    background: Sequence[Callable[[], AbstractAsyncContextManager[Any]]] = (),
) -> Litestar:
    """Build the app. ``background`` are contexts entered for the app's lifetime after its pool
    is up (tests and demos run a queue consumer inside the process this way: jobs sit beside
    the API, not below it, so the API does not import them)."""
    state = AppState(
        settings=settings,
        database_url=database_url,
        policies=policies or PolicyRegistry.load_dir(settings.policies_dir),
    )

    signing = state.signing = load_signing(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state.pool = await create_pool(database_url, min_size=1, max_size=10)
        await register_key(state.pool, signing.signer)  # published before it signs anything
        try:
            async with contextlib.AsyncExitStack() as stack:
                for context in background:
                    await stack.enter_async_context(context())
                yield
        finally:
            await state.pool.close()

    return Litestar(
        route_handlers=[
            assets_router(),
            HealthController,
            ImportsController,
            AssetsController,
            AuditController,
            PoliciesController,
            QuarantineController,
            TokensController,
        ],
        dependencies=dependencies,
        # Parameter validation names the parameter (ledger.api.inputs).
        exception_handlers={**exception_handlers, ValidationException: validation_error},
        before_send=[security_headers],
        middleware=[DefineMiddleware(TokenAuthMiddleware, exclude=PUBLIC_PATHS)],
        lifespan=[lifespan],
        state=State({"ledger": state}),
        openapi_config=OpenAPIConfig(title="ledger", version="0.1.0", path="/schema", render_plugins=render_plugins()),
        debug=False,
    )
