"""A real upstream inventory API on 127.0.0.1, for the connector tests and `ledger bench-pull`.

It serves ``records`` (dicts) under ``{"data": {"items": [...]}, "meta": {"next_cursor": ...}}``
with page, offset or cursor pagination (whichever query parameters arrive), filtered by
``updated_since`` (inclusive) on ``updated_at``, with a fixed latency per response, and with
faults injected by a rule function: a 429 with Retry-After, a 503, HTML, a body cut off
mid-way. It counts requests and the most that were ever in flight at once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["INVENTORY_MAP", "Fault", "Upstream", "inventory_records", "serving_upstream"]

# The `[map]` of a source definition (docs/connectors.md) for the records inventory_records
# makes: each lab-inventory column from its upstream field.
INVENTORY_MAP = """[map]
asset_id = "tag"
grant_code = "grant.code"
category = "kind"
quantity = "qty"
location = "room"
acquisition_date = "acquired"
cas_number = "cas"
hazard_class = "hazard"
unit_cost = "cost"
description = "name"
"""


@dataclass(frozen=True)
class Fault:
    """What to answer instead of the page: a status (with headers and body), or a body cut off
    after ``cut_after`` bytes (the connection then closes)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None


@dataclass
class Upstream:
    records: list[dict[str, Any]]
    latency: float = 0.0
    page_size_max: int = 1000
    # Called with (request number from 1, path, query) before answering; a Fault replaces the page.
    fault: Callable[[int, str, dict[str, str]], Fault | None] | None = None
    requests: int = 0
    in_flight: int = 0
    in_flight_max: int = 0
    answered_last: float = 0.0  # when the last response was written (monotonic): `ledger bench-pull`
    log: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, path?query)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    # The records never change while served (`ledger bench-pull`): each query's body is encoded
    # once and kept, and `encode_ahead` encodes the pages before the first request, so what a
    # bench measures is the client, not this helper's json.dumps.
    frozen: bool = False
    _bodies: dict[tuple[tuple[str, str], ...], bytes] = field(default_factory=dict, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def body(self, query: dict[str, str]) -> bytes:
        """The page's bytes: ``page(query)`` as JSON."""
        if not self.frozen:
            return json.dumps(self.page(query)).encode()
        key = tuple(sorted(query.items()))
        found = self._bodies.get(key)
        if found is None:
            found = self._bodies[key] = json.dumps(self.page(query)).encode()
        return found

    def encode_ahead(self, queries: list[dict[str, str]]) -> None:
        """Encode these queries' pages now (only a frozen upstream keeps them)."""
        for query in queries:
            self.body(query)

    def page(self, query: dict[str, str]) -> dict[str, Any]:
        rows = self.records
        if since := query.get("updated_since"):
            rows = [r for r in rows if str(r.get("updated_at", "")) >= since]
        size = min(int(query.get("limit", "100")), self.page_size_max)
        if "cursor" in query:
            start = int(query["cursor"] or 0)
        elif "offset" in query:
            start = int(query["offset"])
        elif "page" in query:
            start = (int(query["page"]) - 1) * size
        else:
            start = 0
        items = rows[start : start + size]
        following = start + size
        return {
            "data": {"items": items},
            "meta": {"next_cursor": str(following) if following < len(rows) else None, "total": len(rows)},
        }


def inventory_records(n: int, *, start: int = 0, stamp: Callable[[int], str] | None = None) -> list[dict[str, Any]]:
    """``n`` upstream records that map onto valid lab-inventory rows (nested like a WMS's)."""
    out = []
    for i in range(start, start + n):
        out.append(
            {
                "id": f"wms-{i:07d}",
                "tag": f"CHEM-{i:06d}",
                "name": f"Reagent bottle {i}",
                "kind": "chemical",
                "cas": "64-17-5",
                "hazard": "flammable",
                "qty": 1 + i % 50,
                "cost": "18.50",
                "acquired": "2024-05-02",
                "room": "CHM-204-A",
                "grant": {"code": "NSF-CHE2201234"},
                "updated_at": (stamp or _stamp)(i),
            }
        )
    return out


def _stamp(i: int) -> str:
    return f"2024-06-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        up = self.server.upstream
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        with up.lock:
            up.requests += 1
            number = up.requests
            up.in_flight += 1
            up.in_flight_max = max(up.in_flight_max, up.in_flight)
            up.log.append((time.monotonic(), self.path))
        try:
            if up.latency:
                time.sleep(up.latency)
            fault = up.fault(number, parts.path, query) if up.fault is not None else None
            if fault is not None and fault.cut_after is None:
                self._send(fault.status, fault.body, fault.headers)
                return
            body = up.body(query)
            if fault is not None and fault.cut_after is not None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: fault.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(200, body, {"Content-Type": "application/json"})
        finally:
            with up.lock:
                up.in_flight -= 1
                up.answered_last = time.monotonic()

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a client opening max_in_flight connections at once had
    # the rest of its SYNs dropped, and resent them a second later.
    request_queue_size = 128
    upstream: Upstream


@contextmanager
def serving_upstream(upstream: Upstream) -> Iterator[Upstream]:
    """Serve ``upstream`` on a free port of 127.0.0.1 for as long as the context lasts."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.upstream = upstream
    upstream.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="upstream", daemon=True)
    thread.start()
    try:
        yield upstream
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
