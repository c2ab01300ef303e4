"""The job queue (pgqueuer on the same PostgreSQL): what we enqueue and under which names."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

__all__ = ["IMPORT_ENTRYPOINT", "enqueue_import"]

IMPORT_ENTRYPOINT = "import_manifest"


async def enqueue_import(conn: asyncpg.Connection[Any], import_id: uuid.UUID) -> None:
    """Queue the import on ``conn``: inside the caller's transaction, so the import row and
    its job appear together or not at all. The dedupe key stops a second live job."""
    await Queries(AsyncpgDriver(conn)).enqueue(
        IMPORT_ENTRYPOINT, str(import_id).encode(), dedupe_key=f"import:{import_id}"
    )
