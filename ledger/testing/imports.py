"""An import recorded straight in the database, and the settings the job tests run it with,
so a test can drive ledger.jobs.import_job.run_import (or a worker) without the HTTP API.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ledger.config import Settings
from ledger.core.policy.registry import PolicyRegistry
from ledger.db import imports as imports_db
from ledger.db.job_queue import enqueue_import
from ledger.db.labs import add_lab
from ledger.db.pool import Conn
from ledger.testing.checkout import POLICIES_DIR

__all__ = ["CHUNK_ROWS", "create_import", "job_settings"]

# Small chunks, so that a few thousand rows make many checkpoints.
CHUNK_ROWS = 250


def job_settings(url: str, home: Path, **overrides: Any) -> Settings:
    """Settings for running an import in-process on database ``url``: chunks of CHUNK_ROWS,
    staged in this process (no staging processes), the checkout's policies; ``overrides`` win."""
    values: dict[str, Any] = {"import_chunk_rows": CHUNK_ROWS, "import_processes": 0, **overrides}
    return Settings(database_url=url, home=home, policies_dir=POLICIES_DIR, **values)


async def create_import(conn: Conn, path: Path, policies: PolicyRegistry, *, enqueue: bool) -> uuid.UUID:
    """What POST /imports records for a spooled file: the import row of ``path`` (queued, for
    chem-lab under the lab-inventory policy) and, when ``enqueue``, its job, together. Returns
    the import's id."""
    policy = policies.get("lab-inventory")
    task_id = uuid.uuid4()
    record = imports_db.ImportRecord(
        id=task_id,
        idempotency_key=f"crash-{task_id}",
        lab="chem-lab",
        policy_name=policy.name,
        policy_version=policy.version,
        policy_sha256=policy.sha256,
        manifest_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        manifest_bytes=path.stat().st_size,
        filename=path.name,
        spool_path=str(path),
        dry_run=False,
        status="queued",
        rows_total=0,
        rows_committed=0,
        rows_duplicate=0,
        rows_quarantined=0,
        bytes_read=0,
        error=None,
        accepted_body={},
        created_at=datetime.now(UTC),
        started_at=None,
        finished_at=None,
    )
    async with conn.transaction():
        await add_lab(conn, record.lab, None)
        assert await imports_db.insert_import(conn, record, None)
        if enqueue:
            await enqueue_import(conn, task_id)
    return task_id
