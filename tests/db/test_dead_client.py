"""A killed worker's statement does not outlive it: its connections ask PostgreSQL to check
the client socket during long statements (client_connection_check_interval, ledger.db.pool)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

PROBE = """
import asyncio, sys
from ledger.db.pool import connect

async def main() -> None:
    conn = await connect(sys.argv[1], application_name="ledger-dead-client-probe")
    await conn.execute("SELECT pg_sleep(60)")

asyncio.run(main())
"""


async def _probe_backends(db: Any) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'ledger-dead-client-probe' AND state = 'active'"
    )
    return [r["pid"] for r in rows]


async def test_a_killed_clients_statement_ends_within_seconds(database_url: str, db: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-c", PROBE, database_url])
    try:
        deadline = time.monotonic() + 20
        while not await _probe_backends(db):
            assert proc.poll() is None, "the probe exited before its statement started"
            assert time.monotonic() < deadline, "the probe's statement never started"
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        while await _probe_backends(db):
            # Without the check the backend would sleep its full 60 s.
            assert time.monotonic() - killed < 6, "the dead client's statement is still running"
            await asyncio.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
