"""What the pages need of the running app, without importing the API layer that composes it:
the API's AppState (ledger.api.state) has these members, and the app keeps it as
``app.state.ledger``."""

from __future__ import annotations

from typing import Any, Protocol, cast

import asyncpg
from litestar.connection import ASGIConnection

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db.checkpoints import CheckpointSigning

__all__ = ["LedgerState", "ledger_of"]


class LedgerState(Protocol):
    settings: Settings
    policies: PolicyRegistry
    database_url: str
    # The key the API signs checkpoints with (the decisions the pages make commit, and sign).
    signing: CheckpointSigning | None

    @property
    def db(self) -> asyncpg.Pool[Any]: ...


def ledger_of(connection: ASGIConnection[Any, Any, Any, Any]) -> LedgerState:
    return cast(LedgerState, connection.app.state.ledger)
