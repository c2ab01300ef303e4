"""The Litestar application factory. Settings come in as arguments, never from import time."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig

from ledger import audit_log
from ledger.api.access_log import AccessLog
from ledger.api.auth import PUBLIC_PATHS, WEB_PATHS, TokenAuthMiddleware
from ledger.api.controllers.assets import AssetsController
from ledger.api.controllers.audit import AuditController
from ledger.api.controllers.connectors import ConnectorsController
from ledger.api.controllers.health import HealthController
from ledger.api.controllers.imports import ImportsController
from ledger.api.controllers.labs import LabsController
from ledger.api.controllers.metrics import metrics_route
from ledger.api.controllers.policies import PoliciesController
from ledger.api.controllers.quarantine import QuarantineController
from ledger.api.controllers.tokens import TokensController
from ledger.api.controllers.tus import tus_resumable, tus_router
from ledger.api.deps import dependencies
from ledger.api.errors import exception_handlers
from ledger.api.headers import security_headers
from ledger.api.inputs import validation_error
from ledger.api.openapi import document
from ledger.api.schema_pages import assets_router, render_plugins
from ledger.api.slow_bodies import BodyDeadlines
from ledger.api.state import AppState
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.checkpoints import register_key
from ledger.db.pool import create_pool
from ledger.logs import get_logger
from ledger.services.metrics import Metrics
from ledger.services.signing import load_signing
from ledger.telemetry import tracing
from ledger.web import template_config, web_handlers

__all__ = ["create_app"]

log = get_logger("ledger.api")


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
    metrics = Metrics(settings, lambda: state.db)

    @contextlib.asynccontextmanager
    async def audit_stream(app: Litestar) -> AsyncIterator[None]:
        # The audit log for the SIEM (ledger.audit_log), entered first: a key published at
        # start is an audit event, and the stream must outlast the background worker.
        with audit_log.configured(settings.audit_log or "stdout", provider="server"):
            yield

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state.pool = await create_pool(database_url, min_size=1, max_size=10)
        await register_key(state.pool, signing.signer)  # published before it signs anything
        try:
            async with contextlib.AsyncExitStack() as stack:
                for context in background:
                    await stack.enter_async_context(context())
                log.info("api_started", stage="api", pid=os.getpid())
                try:
                    yield
                finally:
                    log.info("api_stopping", stage="api", pid=os.getpid())
        finally:
            await state.pool.close()
            log.info("api_stopped", stage="api", pid=os.getpid())

    app = Litestar(
        route_handlers=[
            assets_router(),
            HealthController,
            ImportsController,
            AssetsController,
            LabsController,
            ConnectorsController,
            AuditController,
            PoliciesController,
            QuarantineController,
            TokensController,
            tus_router(),
            metrics_route(metrics),
            # The pages under /ui/ (and GET / to them), out of the API's schema.
            *web_handlers(),
        ],
        dependencies=dependencies,
        # Parameter validation names the parameter (ledger.api.inputs).
        exception_handlers={**exception_handlers, ValidationException: validation_error},
        before_send=[security_headers, tus_resumable],
        # OPTIONS too (Litestar exempts it by default): its automatic handler runs the route's
        # guards, which need the principal; and there is no CORS preflight to let through.
        # The pages authenticate with their session themselves (a redirect to sign in, not a 401).
        middleware=[
            DefineMiddleware(TokenAuthMiddleware, exclude=[*PUBLIC_PATHS, *WEB_PATHS], exclude_http_methods=())
        ],
        template_config=template_config(),
        lifespan=[audit_stream, lifespan],
        state=State({"ledger": state}),
        openapi_config=OpenAPIConfig(title="ledger", version="0.1.0", path="/schema", render_plugins=render_plugins()),
        debug=False,
    )
    document(app)  # our errors, the bearer scheme, the upload's form (ledger.api.openapi)
    _wrap_outermost(app, settings, metrics)
    return app


def _wrap_outermost(app: Litestar, settings: Settings, metrics: Metrics) -> None:
    """The access log and the body deadlines around the whole app, routing included: Litestar's
    own middleware runs per route, after routing, so it never sees a path no route has."""
    templates: dict[str, str] = {}

    def routes() -> dict[str, str]:
        if not templates:  # built on first use, once every route is registered
            templates.update({route.path_format: route.path for route in app.routes})
        return templates

    # The request's span (when tracing is on) outside them all, so their log lines carry its trace id.
    app.asgi_handler = tracing.http_app(
        AccessLog(BodyDeadlines(app.asgi_handler, settings), routes, metrics.observe_http)
    )
