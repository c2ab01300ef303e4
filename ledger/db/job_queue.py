"""The job queue (pgqueuer on the same PostgreSQL): what we enqueue and under which names."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from ledger.db.pool import Conn

__all__ = [
    "CONNECTOR_ENTRYPOINT",
    "CONNECTOR_SCHEDULE_ENTRYPOINT",
    "IMPORT_ENTRYPOINT",
    "enqueue_connector_sync",
    "enqueue_import",
]

IMPORT_ENTRYPOINT = "import_manifest"


async def enqueue_import(conn: Conn, import_id: uuid.UUID) -> None:
    """Queue the import on ``conn``: inside the caller's transaction, so the import row and
    its job appear together or not at all. The dedupe key stops a second live job."""
    # pgqueuer's driver is typed for a plain connection; a pooled proxy behaves the same.
    await Queries(AsyncpgDriver(cast("asyncpg.Connection[Any]", conn))).enqueue(
        IMPORT_ENTRYPOINT, str(import_id).encode(), dedupe_key=f"import:{import_id}"
    )


CONNECTOR_ENTRYPOINT = "connector_sync"
# The scheduler's tick: once a minute, one worker (pgqueuer's schedules table decides which)
# queues a sync of every registered source whose cron expression fell due.
CONNECTOR_SCHEDULE_ENTRYPOINT = "connector_schedule"


async def enqueue_connector_sync(conn: Conn, name: str, requested_by: str | None = None) -> bool:
    """Queue a sync of source ``name``; False when one is already queued or running (the
    dedupe key allows one live job per source across every worker)."""
    payload = name.encode() if requested_by is None else f"{name}\n{requested_by}".encode()
    ids = await Queries(AsyncpgDriver(cast("asyncpg.Connection[Any]", conn))).enqueue(
        CONNECTOR_ENTRYPOINT, payload, dedupe_key=f"connector:{name}", on_conflict="skip"
    )
    return ids[0] is not None
