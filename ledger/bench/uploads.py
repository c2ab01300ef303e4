"""`ledger bench-upload`: a 100 MB manifest through the upload page in Chromium, cut off half-way,
and through tuspy.

Each run makes a fresh database beside the configured one (as `ledger bench-ui` does) and
starts `ledger serve --workers 0` on it, on 127.0.0.1: the API alone, so that the imports the
uploads become wait in the queue instead of being parsed beside the next upload (they are dry
runs, and the database is dropped after the run). The manifests are valid CSV of exactly the
sizes asked for, written once into a temporary directory. Then, signed in as a lab manager in
Debian's Chromium (Playwright, /usr/bin/chromium or LEDGER_CHROMIUM), each run

1. uploads a small manifest to warm the server up (not measured), then the small one (10 MB)
   and the large one (100 MB) through /ui/imports/new as a person would: the file picked,
   "Dry run" ticked, "Upload" pressed; timed from the press until the page goes to
   /ui/imports/{task_id} (which it does when the answer to the last PATCH is in), with the API
   process's peak RSS during each upload (``VmHWM``, reset before it through
   /proc/PID/clear_refs, and the RSS sampled every 5 ms besides);
2. uploads the large one again, the browser talking to the server through a TCP relay on
   127.0.0.1 that stands for the network, and drops the network when half the file's size has
   gone through it: the PATCH in flight is cut (the server reads what had arrived, then the
   end; the browser gets a reset) and new connections are reset for a second. The page's tus
   client tries again by itself (or, had it given up, "Upload" is pressed again and the page
   finds the upload under the file's fingerprint) and resumes from the server's offset. What
   the server received is read from its own side, the access log's ``request_bytes`` of every
   request to /uploads/ (what arrived of the cut PATCH counts, kept or not), and the upload's
   offset right after the drop from the tus_uploads table;
3. uploads the large one with tuspy (tus's Python client) in chunks of the browser's size.

The server's own time for an upload (from the arrival of its POST to the answer to its last
PATCH, from the access log) is given beside each client's time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import socket
import statistics
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import psutil

from ledger.bench.audit_paths import _admin, _machine, _with_database
from ledger.bench.manifest import HEADER
from ledger.bench.ui_pages import _chromium, _Server
from ledger.web.controllers.imports import CHUNK_BYTES_MAX

__all__ = ["DroppedUpload", "PageUpload", "TuspyUpload", "UploadBench", "run_upload_bench"]

MB = 1_000_000
LAB = "bench-lab"
POLICY = "lab-inventory"
# The manifest that warms the server up (first requests, templates, imports) before measuring.
_WARM_BYTES = 1 * MB
_IMPORT_PAGE = re.compile(r"/ui/imports/[0-9a-f-]{36}$")
_PROGRESS = "(() => { const b = document.getElementById('upload-progress'); return [b.value, b.max]; })()"
_ERROR = "document.getElementById('upload-error').textContent"
# How long the network stays down once it has dropped.
_OFFLINE_SECONDS = 1.0
_RSS_SAMPLE_SECONDS = 0.005
T = TypeVar("T")


class PageUpload(msgspec.Struct, kw_only=True):
    """One upload through /ui/imports/new."""

    bytes: int
    # From pressing "Upload" until the page goes to the import (the last PATCH answered).
    seconds: float
    mb_per_s: float
    # From the POST's arrival to the answer to the last PATCH, by the access log.
    server_seconds: float
    server_mb_per_s: float
    patches: int
    patch_server_ms_p50: float
    server_received_bytes: int
    api_rss_before_mb: float
    api_peak_rss_mb: float
    # "VmHWM": the kernel's high-water mark, reset before the upload, and 5 ms samples; or the
    # samples alone where /proc/PID/clear_refs cannot be written.
    api_peak_rss_from: str


class DroppedUpload(msgspec.Struct, kw_only=True):
    """One upload through the page with the network dropped half-way."""

    bytes: int
    # The network went once this many bytes had gone from the browser to the server (headers
    # included), half the file's size; the page's progress bar then said progress_bar_at_drop.
    dropped_after_bytes: int
    progress_bar_at_drop: int
    # Whether a PATCH was cut short (the server answered it with an error, or not at all).
    patch_cut: bool
    # The upload's offset in tus_uploads once the cut PATCH had ended.
    server_offset_after_drop: int
    # Every body byte of every request to /uploads/ for this upload, by the access log.
    server_received_bytes: int
    # What the relay carried from the browser to the server from the press of "Upload" on:
    # request heads, and bodies the server refused unread (a 409 answers before reading), too.
    network_bytes: int
    resent_bytes: int
    resent_bytes_max: int
    resent_at_most_one_chunk: bool
    # "retry": tus-js-client went on by itself; "upload pressed again": it had given up.
    resumed_by: str
    # The upload's requests as the server logged them (when each ended): method, status, bytes.
    requests: list[str]
    # From the first press of "Upload" to the page of the import, the offline second included.
    seconds: float


class TuspyUpload(msgspec.Struct, kw_only=True):
    bytes: int
    seconds: float
    mb_per_s: float
    server_seconds: float
    server_mb_per_s: float
    patches: int
    server_received_bytes: int
    api_peak_rss_mb: float


class Run(msgspec.Struct, kw_only=True):
    small: PageUpload
    large: PageUpload
    dropped: DroppedUpload
    tuspy: TuspyUpload | None
    tuspy_note: str | None = None


class UploadBench(msgspec.Struct, kw_only=True):
    machine: dict[str, Any]
    runs: int
    file_bytes: int
    small_file_bytes: int
    chunk_bytes: int
    # Medians over the runs.
    browser_mb_per_s: float
    browser_seconds: float
    browser_server_mb_per_s: float
    api_peak_rss_mb: dict[str, float]
    api_rss_growth_mb: dict[str, float]
    dropped_resent_bytes: int
    dropped_resent_bytes_max_over_runs: int
    dropped_resent_at_most_one_chunk: bool
    tuspy_mb_per_s: float | None
    tuspy_server_mb_per_s: float | None
    per_run: list[Run]
    note: str | None = None


def write_manifest_of_size(path: Path, size: int) -> Path:
    """A valid lab-inventory CSV of exactly ``size`` bytes: rows with unique asset ids and
    descriptions (at most 500 characters, the policy's limit) long enough to fill it."""
    header = HEADER + "\n"
    prefix_len = len("UP-00000000,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,")
    body = size - len(header)
    per_row = prefix_len + 1 + 480
    rows = max(1, -(-body // per_row))
    descriptions = body - rows * (prefix_len + 1)
    if rows > 99_999_999 or descriptions < rows or descriptions > rows * 500:
        raise ValueError(f"cannot write a manifest of exactly {size} bytes")
    base, extra = divmod(descriptions, rows)
    filler = ("lab-bench-upload-" * 30)[: base + 1]
    with path.open("w", encoding="ascii", newline="") as out:
        out.write(header)
        lines: list[str] = []
        for i in range(rows):
            text = filler if i < extra else filler[:base]
            lines.append(f"UP-{i:08d},NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,{text}\n")
            if len(lines) == 4096:
                out.write("".join(lines))
                lines.clear()
        out.write("".join(lines))
    assert path.stat().st_size == size, (path.stat().st_size, size)
    return path


def _aside(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a loop in a thread: Playwright's sync API holds this thread's."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _fetchval(url: str, query: str) -> Any:
    from ledger.db.pool import connect

    conn = await connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


class _PeakRss:
    """The peak RSS of a process over a ``with`` block: the kernel's high-water mark, reset when
    the block starts (where /proc/PID/clear_refs may be written), and a sampler beside it."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.pid = pid
        self.before = 0
        self.peak = 0
        self._stop = threading.Event()
        self.high_water_mark = False

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def _sample(self) -> None:
        while not self._stop.wait(_RSS_SAMPLE_SECONDS):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self.high_water_mark = True
        except OSError:
            self.high_water_mark = False
        self.before = self.process.memory_info().rss
        self.peak = self.before
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        if self.high_water_mark:
            self.peak = max(self.peak, self._status("VmHWM"))


class _Relay:
    """A TCP relay on 127.0.0.1 in front of the server, standing for the network between the
    browser and it. Armed with a number of bytes, it drops when that many have gone from the
    browser to the server: the connection it was carrying them on and every other one are cut
    (the server sees its request end early, the browser a reset), and for as long as it is
    offline, a new connection is reset as soon as it is made. (Playwright's
    ``context.set_offline`` cannot stand in for this: Chromium (156) lets a request whose body
    is being sent finish and fails the next one before it starts, so no PATCH is ever cut.)"""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.dropped = threading.Event()
        self._lock = threading.Lock()
        # Each connection's two sockets, True for the browser's side.
        self._open: dict[socket.socket, bool] = {}
        self._offline = False
        self._budget: int | None = None
        self._closed = False
        # Bytes carried from the browser to the server since arm().
        self.carried = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, after_bytes: int) -> None:
        with self._lock:
            self._budget = after_bytes
            self.carried = 0
            self.dropped.clear()

    def restore(self) -> None:
        with self._lock:
            self._offline = False

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._drop()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                # Checked and registered at once: a connection made as the network drops is
                # either cut with the others or refused.
                offline = self._offline
                if not offline:
                    self._open.update({client: True, upstream: False})
            if offline:
                _reset(client)
                upstream.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, to_server: bool) -> None:
        try:
            while data := source.recv(1 << 20):
                if to_server:
                    with self._lock:
                        budget = self._budget
                        if budget is not None:
                            self._budget = budget - len(data) if len(data) < budget else None
                        self.carried += len(data) if budget is None else min(budget, len(data))
                    if budget is not None and len(data) >= budget:
                        sink.sendall(data[:budget])
                        self._drop()
                        return
                sink.sendall(data)
            # One side closed: so does the other, in that direction.
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

    def _drop(self) -> None:
        """The network goes: every connection is cut, and new ones are refused until restore()."""
        with self._lock:
            self._offline = True
            cut, self._open = self._open, {}
        for sock, browser_side in cut.items():
            # The browser's side is reset; the server's is closed after the bytes already sent,
            # as a peer that vanished would leave it (it reads them, then the end).
            with contextlib.suppress(OSError):
                if browser_side:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.dropped.set()


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _mb(n: int) -> float:
    return round(n / MB, 1)


def _rate(size: int, seconds: float) -> float:
    return round(size / MB / seconds, 1) if seconds > 0 else 0.0


class _Uploads:
    """The access log's lines of one upload: the requests to /uploads/ from a mark on."""

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.mark = len(server.requests)

    def events(self) -> list[dict[str, Any]]:
        """Once every request before now is logged (a request of our own, logged after them)."""
        marker = f"/health/live?bench={uuid.uuid4().hex}"
        seen = len(self.server.requests)
        httpx.get(self.server.base_url + marker, timeout=30).raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            logged = self.server.requests[seen:]
            if any(e.get("route") == "/health/live" for e in logged):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the access log did not catch up")
        return [e for e in self.server.requests[self.mark :] if str(e.get("route", "")).startswith("/uploads")]

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first line from the mark on that ``predicate`` holds for, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.server.requests[self.mark :]:
                if str(event.get("route", "")).startswith("/uploads") and predicate(event):
                    return event
            time.sleep(0.01)
        return None


def _server_span(events: list[dict[str, Any]]) -> float:
    """Seconds from the arrival of the first request to the answer to the last."""

    def end(e: dict[str, Any]) -> float:
        return datetime.fromisoformat(str(e["timestamp"])).timestamp()

    first = min(end(e) - float(e["duration_ms"]) / 1000 for e in events)
    return max(end(e) for e in events) - first


def _received(events: list[dict[str, Any]]) -> int:
    return sum(int(e.get("request_bytes", 0)) for e in events)


def _sign_in(page: Any, token: str) -> None:
    page.goto("/ui/sign-in")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/")


def _choose(page: Any, path: Path) -> None:
    page.goto("/ui/imports/new")
    page.get_by_label("Manifest file").set_input_files(path)
    page.get_by_label("Dry run").check()


def _page_upload(page: Any, server: _Server, path: Path) -> PageUpload:
    size = path.stat().st_size
    _choose(page, path)
    log = _Uploads(server)
    with _PeakRss(server.proc.pid) as rss:
        t0 = time.perf_counter()
        page.get_by_role("button", name="Upload").click()
        page.wait_for_url(_IMPORT_PAGE, wait_until="commit")
        seconds = time.perf_counter() - t0
    events = log.events()
    patches = [e for e in events if e["method"] == "PATCH"]
    if not all(e["status"] in (201, 204) for e in events if e["method"] in ("POST", "PATCH")):
        raise RuntimeError(f"an upload request failed: {[(e['method'], e['status']) for e in events]}")
    span = _server_span(events)
    return PageUpload(
        bytes=size,
        seconds=round(seconds, 3),
        mb_per_s=_rate(size, seconds),
        server_seconds=round(span, 3),
        server_mb_per_s=_rate(size, span),
        patches=len(patches),
        patch_server_ms_p50=round(statistics.median(float(e["duration_ms"]) for e in patches), 1) if patches else 0.0,
        server_received_bytes=_received(events),
        api_rss_before_mb=_mb(rss.before),
        api_peak_rss_mb=_mb(rss.peak),
        api_peak_rss_from="VmHWM" if rss.high_water_mark else "5 ms samples",
    )


def _dropped_upload(browser: Any, server: _Server, token: str, path: Path, database_url: str) -> DroppedUpload:
    size = path.stat().st_size
    relay = _Relay(server.port)
    context = browser.new_context(base_url=f"http://127.0.0.1:{relay.port}")
    try:
        context.set_default_timeout(120_000)
        page = context.new_page()
        _sign_in(page, token)
        _choose(page, path)
        log = _Uploads(server)
        relay.arm(size // 2)
        t0 = time.perf_counter()
        page.get_by_role("button", name="Upload").click()
        if not relay.dropped.wait(120):
            raise RuntimeError("the upload never got half-way")
        progress = int(page.evaluate(_PROGRESS)[0])
        # The server lets the cut PATCH go (keeping what arrived of it); the log says when.
        cut = log.wait_for(lambda e: e["method"] == "PATCH" and e["status"] != 204, timeout=30)
        offset = int(
            _aside(_fetchval(database_url, "SELECT received FROM tus_uploads ORDER BY created_at DESC LIMIT 1")) or 0
        )
        time.sleep(_OFFLINE_SECONDS)
        relay.restore()
        # tus-js-client tries again by itself (after 0, 1, 3, 5 and 10 s); had it given up, the
        # page says so and a person presses "Upload" again.
        resumed_by = "retry"
        deadline = time.monotonic() + 120
        while not _IMPORT_PAGE.search(page.url):
            if time.monotonic() > deadline:
                raise RuntimeError("the upload did not resume")
            with contextlib.suppress(Exception):  # the page may be navigating away
                if resumed_by == "retry" and page.evaluate(_ERROR):
                    resumed_by = "upload pressed again"
                    page.get_by_role("button", name="Upload").click()
            time.sleep(0.02)
        seconds = time.perf_counter() - t0
        network = relay.carried
    finally:
        context.close()
        relay.close()
    events = log.events()
    requests = [f"{e['method']} {e['status']} {e.get('request_bytes', 0)}" for e in events]
    received = _received(events)
    return DroppedUpload(
        bytes=size,
        dropped_after_bytes=size // 2,
        progress_bar_at_drop=progress,
        patch_cut=cut is not None,
        server_offset_after_drop=offset,
        server_received_bytes=received,
        network_bytes=network,
        resent_bytes=received - size,
        resent_bytes_max=CHUNK_BYTES_MAX,
        resent_at_most_one_chunk=received - size <= CHUNK_BYTES_MAX,
        resumed_by=resumed_by,
        requests=requests,
        seconds=round(seconds, 3),
    )


def _tuspy_upload(server: _Server, token: str, path: Path) -> TuspyUpload:
    from tusclient.client import TusClient
    from tusclient.uploader.uploader import Uploader

    size = path.stat().st_size
    client = TusClient(f"{server.base_url}/uploads/", headers={"Authorization": f"Bearer {token}"})
    metadata = {"filename": path.name, "policy": POLICY, "lab": LAB, "dry_run": "true"}
    log = _Uploads(server)
    with _PeakRss(server.proc.pid) as rss:
        t0 = time.perf_counter()
        uploader: Any = Uploader(file_path=str(path), client=client, chunk_size=CHUNK_BYTES_MAX, metadata=metadata)
        uploader.upload()
        seconds = time.perf_counter() - t0
    if not uploader.request.response_headers.get("ledger-import"):
        raise RuntimeError("tuspy's upload ended without the server naming its import")
    events = log.events()
    span = _server_span(events)
    return TuspyUpload(
        bytes=size,
        seconds=round(seconds, 3),
        mb_per_s=_rate(size, seconds),
        server_seconds=round(span, 3),
        server_mb_per_s=_rate(size, span),
        patches=sum(1 for e in events if e["method"] == "PATCH"),
        server_received_bytes=_received(events),
        api_peak_rss_mb=_mb(rss.peak),
    )


def _manager_token(server: _Server) -> str:
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=60)
    with admin:
        admin.post("/labs", json={"name": LAB, "title": "Bench"}).raise_for_status()
        created = admin.post("/tokens", json={"role": "lab_manager", "labs": [LAB], "label": "bench uploads"})
        created.raise_for_status()
        token: str = created.json()["token"]
        return token


def _run_once(url: str, workdir: Path, chromium: str, files: dict[str, Path]) -> Run:
    from playwright.sync_api import sync_playwright

    name = f"ledger_bench_upload_{uuid.uuid4().hex[:8]}"
    bench_url = _with_database(url, name)
    _aside(_admin(url, f'CREATE DATABASE "{name}"'))
    server: _Server | None = None
    try:
        home = workdir / name
        home.mkdir()
        # The API alone: the imports the uploads become wait in the queue.
        server = _Server(bench_url, home, serve_args=("--workers", "0"))
        token = _manager_token(server)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                context = browser.new_context(base_url=server.base_url)
                context.set_default_timeout(120_000)
                page = context.new_page()
                _sign_in(page, token)
                _page_upload(page, server, files["warm"])
                small = _page_upload(page, server, files["small"])
                large = _page_upload(page, server, files["large"])
                context.close()
                dropped = _dropped_upload(browser, server, token, files["large"], bench_url)
            finally:
                browser.close()
        tuspy: TuspyUpload | None = None
        note = None
        try:
            tuspy = _tuspy_upload(server, token, files["large"])
        except ImportError:
            note = "tuspy is not installed (pip install -e '.[test]')"
        return Run(small=small, large=large, dropped=dropped, tuspy=tuspy, tuspy_note=note)
    finally:
        if server is not None:
            server.stop()
        _aside(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _median(values: Iterator[float] | list[float]) -> float:
    return round(statistics.median(list(values)), 1)


def run_upload_bench(url: str, home: Path, *, runs: int, megabytes: int, small_megabytes: int) -> UploadBench:
    chromium = _chromium()
    if chromium is None:
        raise RuntimeError("bench-upload needs Chromium: LEDGER_CHROMIUM or /usr/bin/chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("bench-upload needs playwright (pip install -e '.[test]')") from exc
    machine = _machine()
    machine["memory_gib"] = round(psutil.virtual_memory().total / 1024**3, 1)
    results: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ledger-bench-upload-", dir=home if home.is_dir() else None) as tmp:
        workdir = Path(tmp)
        files = {
            "warm": write_manifest_of_size(workdir / "warm.csv", _WARM_BYTES),
            "small": write_manifest_of_size(workdir / f"manifest-{small_megabytes}MB.csv", small_megabytes * MB),
            "large": write_manifest_of_size(workdir / f"manifest-{megabytes}MB.csv", megabytes * MB),
        }
        for _ in range(runs):
            results.append(_run_once(url, workdir, chromium, files))
    load = os.getloadavg()
    machine["load_average_1m_end"] = round(load[0], 2)
    machine["load_average_5m_end"] = round(load[1], 2)
    tuspy = [r.tuspy for r in results if r.tuspy is not None]
    resent = [r.dropped.resent_bytes for r in results]
    return UploadBench(
        machine=machine,
        runs=runs,
        file_bytes=megabytes * MB,
        small_file_bytes=small_megabytes * MB,
        chunk_bytes=CHUNK_BYTES_MAX,
        browser_mb_per_s=_median(r.large.mb_per_s for r in results),
        browser_seconds=round(statistics.median(r.large.seconds for r in results), 3),
        browser_server_mb_per_s=_median(r.large.server_mb_per_s for r in results),
        api_peak_rss_mb={
            f"{small_megabytes} MB": _median(r.small.api_peak_rss_mb for r in results),
            f"{megabytes} MB": _median(r.large.api_peak_rss_mb for r in results),
        },
        api_rss_growth_mb={
            f"{small_megabytes} MB": _median(r.small.api_peak_rss_mb - r.small.api_rss_before_mb for r in results),
            f"{megabytes} MB": _median(r.large.api_peak_rss_mb - r.large.api_rss_before_mb for r in results),
        },
        dropped_resent_bytes=int(statistics.median(resent)),
        dropped_resent_bytes_max_over_runs=max(resent),
        dropped_resent_at_most_one_chunk=all(r.dropped.resent_at_most_one_chunk for r in results),
        tuspy_mb_per_s=_median(t.mb_per_s for t in tuspy) if tuspy else None,
        tuspy_server_mb_per_s=_median(t.server_mb_per_s for t in tuspy) if tuspy else None,
        per_run=results,
        note=next((r.tuspy_note for r in results if r.tuspy_note), None),
    )
