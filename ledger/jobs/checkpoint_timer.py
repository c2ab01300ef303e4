"""The worker's periodic checkpoint: a head no checkpoint covers is signed within an interval.

Every commit signs a checkpoint of its new head in its own transaction (docs/ledger-format.md
§9.3), but a writer without the key (a script, a restore) or a refused signature leaves the
head unsigned until the next commit, which on a quiet ledger may be days away. Each worker looks
every ``LEDGER_CHECKPOINT_INTERVAL_SECONDS`` and, when the head is past the latest checkpoint,
signs one through the same service as ``POST /audit/checkpoints``. Several workers may do so at
once: signing takes the head lock, and the second finds the head already signed.

GET /metrics exports the interval beside how long the head has gone unsigned, and the alert
fires at twice the interval (deploy/prometheus/alerts.yml).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from ledger.config import Settings
from ledger.db.checkpoints import CheckpointRefused, CheckpointSigning
from ledger.db.metrics import head_unsigned
from ledger.logs import get_logger
from ledger.services.audit_trail import request_checkpoint

__all__ = ["run_checkpoint_timer", "sign_if_unsigned"]

log = get_logger("ledger.checkpoints")


async def sign_if_unsigned(pool: asyncpg.Pool[Any], signing: CheckpointSigning) -> int | None:
    """Sign a checkpoint of the head if no checkpoint covers it; the tree size signed, or None."""
    if not await head_unsigned(pool):
        return None
    checkpoint, created = await request_checkpoint(pool, signing)
    if not created:
        return None
    log.info("checkpoint_signed", stage="checkpoint", tree_size=checkpoint.tree_size, by="timer")
    return checkpoint.tree_size


async def run_checkpoint_timer(pool: asyncpg.Pool[Any], settings: Settings, signing: CheckpointSigning) -> None:
    """Until cancelled: at start, then every interval, sign the head if it is unsigned."""
    while True:
        try:
            await sign_if_unsigned(pool, signing)
        except CheckpointRefused:
            pass  # logged where it was raised; the alert on the unsigned head's age says the rest
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("checkpoint_timer_failed", stage="checkpoint", error=type(exc).__name__)
        await asyncio.sleep(settings.checkpoint_interval_seconds)
