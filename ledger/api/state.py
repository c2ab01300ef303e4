"""What every request handler may use, built once per app."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from ledger.config import Settings
from ledger.services.policies import PolicyRegistry

__all__ = ["AppState"]


class AppState(msgspec.Struct, kw_only=True):
    settings: Settings
    database_url: str
    policies: PolicyRegistry
    pool: asyncpg.Pool[Any] | None = None

    @property
    def db(self) -> asyncpg.Pool[Any]:
        assert self.pool is not None, "the app has not started"
        return self.pool
