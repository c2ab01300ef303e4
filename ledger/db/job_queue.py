"""The job queue (pgqueuer on the same PostgreSQL): what we enqueue and under which names."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from ledger.db.pool import Conn

__all__ = ["IMPORT_ENTRYPOINT", "enqueue_import"]

IMPORT_ENTRYPOINT = "import_manifest"


async def enqueue_import(conn: Conn, import_id: uuid.UUID) -> None:
    """Queue the import on ``conn``: inside the caller's transaction, so the import row and
    its job appear together or not at all. The dedupe key stops a second live job."""
    # pgqueuer's driver is typed for a plain connection; a pooled proxy behaves the same.
    await Queries(AsyncpgDriver(cast("asyncpg.Connection[Any]", conn))).enqueue(
        IMPORT_ENTRYPOINT, str(import_id).encode(), dedupe_key=f"import:{import_id}"
    )
