"""What every request handler may use, built once per app."""

from __future__ import annotations

from typing import Any

import asyncpg

from ledger.api.upload_slots import UploadSlots
from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.services.signing import CheckpointSigning

__all__ = ["AppState"]


class AppState:
    def __init__(self, *, settings: Settings, database_url: str, policies: PolicyRegistry) -> None:
        self.settings = settings
        self.database_url = database_url
        self.policies = policies
        self.pool: asyncpg.Pool[Any] | None = None
        # What the API signs checkpoints with: its review decisions commit, and an admin may
        # ask for a checkpoint (set by create_app).
        self.signing: CheckpointSigning | None = None
        self.uploads = UploadSlots(settings.uploads_per_token_max)

    @property
    def db(self) -> asyncpg.Pool[Any]:
        assert self.pool is not None, "the app has not started"
        return self.pool
