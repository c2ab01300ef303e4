"""The app on a real uvicorn server on 127.0.0.1, for tests that need real sockets: a client
that trickles its body, uploads that overlap, a connection the server closes.

The server runs in a thread with its own event loop (uvicorn installs no signal handlers
there), so the test's loop stays free to play the clients.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from litestar import Litestar

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app: Litestar, *, start_timeout: float = 30.0) -> Iterator[int]:
    """Serve ``app`` on a free port of 127.0.0.1 for as long as the context lasts; its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port: int = sock.getsockname()[1]
    # A client a test leaves open must not hold up the end of the test for long.
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
