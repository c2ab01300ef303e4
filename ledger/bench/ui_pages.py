"""`ledger bench-ui`: the officer's and auditor's pages with 10,000 open quarantine items.

Each run makes a fresh database beside the configured one (as `ledger bench-audit` does),
starts `ledger serve` on it, imports one manifest of 10,000 rows that each break a rule (the
values vary, as real ones do, so that no two rows' errors are alike) and a small clean one,
and runs ANALYZE, as autovacuum would within a minute of such an import. Then, signed in as a
compliance officer (a browser session, as the pages are used), it requests each page in turn
and takes its server time from the service's own access log (``http_request``,
``duration_ms``: from the request's arrival to the answer's last byte), with the time the
client waited beside it; and, when Chromium and Playwright are there, it changes a filter of
the queue in a real browser and times each change from the select to the new results in the
page. The bulk dismissal of 1,000 items is timed once per run, last (it changes the queue).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec

from ledger.bench.audit_paths import _admin, _machine, _with_database

__all__ = ["PageTimes", "UiBench", "run_ui_bench"]

ITEMS = 10_000
LAB = "bench-lab"
HEADER = "asset_id,grant_code,category,quantity,location,acquisition_date,cas_number,hazard_class,unit_cost,description"
# The rules the bad rows break, in turn: (rule, field) and how to break it in row n.
_BROKEN: tuple[Callable[[int], str], ...] = (
    lambda n: f"UI-{n:06d},NIH-R01GM{n % 50},gadget{n % 97},1,CHM-204,2024-01-15,,,10.00,Enum {n}",
    lambda n: f"UI-{n:06d},NIH-R01GM{n % 50},equipment,{n % 9}.{n % 7 + 1},CHM-204,2024-01-15,,,10.00,Integer {n}",
    lambda n: f"UI-{n:06d},xyz-{n},equipment,1,CHM-204,2024-01-15,,,10.00,Prefix {n}",
    lambda n: f"UI-{n:06d},NIH-R01GM{n % 50},equipment,1,lab {n},2024-01-15,,,10.00,Pattern {n}",
)
_CLEAN_ROWS = 100
_CHROMIUM = "/usr/bin/chromium"


class PageTimes(msgspec.Struct, kw_only=True):
    requests: int
    server_p50_ms: float
    server_p95_ms: float
    server_max_ms: float
    client_p50_ms: float
    client_p95_ms: float


class UiBench(msgspec.Struct, kw_only=True):
    machine: dict[str, Any]
    runs: int
    open_items: int
    # Per page: the medians over the runs of each run's figures.
    pages: dict[str, PageTimes]
    # One bulk dismissal of BULK_ITEMS_MAX items (server ms), median over the runs.
    bulk_dismiss_1000_server_ms: float
    # A filter change in the queue, in Chromium: from the select to the new results in the page.
    browser_filter_change_p50_ms: float | None
    browser_filter_change_p95_ms: float | None
    browser_filter_changes: int
    browser_note: str | None = None


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _manifest(path: Path, rows: list[str]) -> bytes:
    data = ("\n".join([HEADER, *rows]) + "\n").encode()
    path.write_bytes(data)
    return data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Server:
    """`ledger serve` on the bench's database, and its access log as it is written."""

    def __init__(self, database_url: str, home: Path, *, serve_args: tuple[str, ...] = ()) -> None:
        self.port = _free_port()
        env = {**os.environ, "LEDGER_DATABASE_URL": database_url, "LEDGER_HOME": str(home)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ledger.cli.main", "serve", "--port", str(self.port), *serve_args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.requests: list[dict[str, Any]] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._drain_log, daemon=True).start()
        self.admin = self._wait_listening()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def _wait_listening(self) -> str:
        assert self.proc.stdout is not None
        token = ""
        for line in self.proc.stdout:
            if line.strip().startswith("ldg_"):
                token = line.strip()
            if "listening on" in line:
                threading.Thread(target=lambda: [None for _ in self.proc.stdout or ()], daemon=True).start()
                if not token:
                    raise RuntimeError("the server printed no first-start admin token")
                return token
        raise RuntimeError("the server stopped before it listened")

    def _drain_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if line.startswith("{") and '"http_request"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    with self._seen:
                        self.requests.append(event)
                        self._seen.notify_all()

    def next_request(self, after: int, timeout: float = 10.0) -> dict[str, Any]:
        """The access log's event after the first ``after`` (written once the answer is sent)."""
        with self._seen:
            if not self._seen.wait_for(lambda: len(self.requests) > after, timeout):
                raise RuntimeError("the access log said nothing of the request")
            return self.requests[after]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class _Officer:
    """A browser session of a compliance officer, over httpx, each request timed twice."""

    def __init__(self, server: _Server, token: str) -> None:
        self.server = server
        self.client = httpx.Client(base_url=server.base_url, timeout=120)
        self.csrf = ""
        self.get("/ui/sign-in")
        signed = self.client.post("/ui/sign-in", data={"token": token, "csrf_token": self.csrf})
        assert signed.status_code == 303, signed.text
        self.get("/ui/")

    def _remember(self, response: httpx.Response) -> httpx.Response:
        if found := re.search(r'<meta name="csrf-token" content="([^"]*)">', response.text):
            self.csrf = found.group(1)
        return response

    def get(self, path: str) -> httpx.Response:
        return self._remember(self.client.get(path))

    def timed(self, method: str, path: str, form: dict[str, Any] | None = None) -> tuple[httpx.Response, float, float]:
        """The answer, its server time (ms, from the access log) and the client's wait (ms)."""
        seen = len(self.server.requests)
        data = None if form is None else {**form, "csrf_token": self.csrf}
        t0 = time.perf_counter()
        response = self.client.request(method, path, data=data)
        waited = (time.perf_counter() - t0) * 1000
        event = self.server.next_request(seen)
        assert event["status"] == response.status_code, (event, response.status_code)
        return self._remember(response), float(event["duration_ms"]), waited


def _times(server: list[float], client: list[float]) -> PageTimes:
    return PageTimes(
        requests=len(server),
        server_p50_ms=round(statistics.median(server), 1),
        server_p95_ms=round(_percentile(server, 0.95), 1),
        server_max_ms=round(max(server), 1),
        client_p50_ms=round(statistics.median(client), 1),
        client_p95_ms=round(_percentile(client, 0.95), 1),
    )


def _link(page: str, name: str) -> str:
    found = re.search(rf'<a href="([^"]*)"[^>]*>{re.escape(name)}</a>', page)
    assert found, name
    return found.group(1).replace("&amp;", "&")


def _setup(server: _Server, workdir: Path) -> tuple[dict[str, str], str]:
    """The lab, a token per role, the bad manifest and the clean one imported; the tokens and
    the bad import's task id."""
    admin = httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.admin}"}, timeout=120)
    admin.post("/labs", json={"name": LAB, "title": "Bench"}).raise_for_status()
    tokens = {}
    for name, role, labs in (
        ("manager", "lab_manager", [LAB]),
        ("officer", "compliance_officer", []),
        ("auditor", "auditor", []),
    ):
        created = admin.post("/tokens", json={"role": role, "labs": labs, "label": f"bench {name}"})
        created.raise_for_status()
        tokens[name] = created.json()["token"]
    manager = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {tokens['manager']}"}, timeout=600
    )
    bad = _manifest(workdir / "bad.csv", [_BROKEN[n % len(_BROKEN)](n) for n in range(ITEMS)])
    clean_rows = [
        f"OK-{n:04d},NIH-R01GM1,equipment,{n},CHM-204,2024-01-15,,,10.00,Clean {n}" for n in range(_CLEAN_ROWS)
    ]
    clean = _manifest(workdir / "clean.csv", clean_rows)
    task = ""
    for name, data in (("bad.csv", bad), ("clean.csv", clean)):
        submitted = manager.post("/imports", files={"file": (name, data, "text/csv")}, data={"lab": LAB})
        submitted.raise_for_status()
        task_id = submitted.json()["task_id"]
        while (status := manager.get(f"/imports/{task_id}").json())["status"] not in ("done", "failed"):
            time.sleep(0.2)
        assert status["status"] == "done", status
        if name == "bad.csv":
            assert status["rows_quarantined"] == ITEMS, status
            task = task_id
    return tokens, task


def _pages(officer: _Officer, task: str, samples: int) -> tuple[dict[str, PageTimes], float]:
    """Each page ``samples`` times (after two unmeasured requests); then one bulk dismissal."""
    first = officer.get("/ui/quarantine?status=open").text
    second_url = _link(first, "Next page")
    previous_url = _link(officer.get(second_url).text, "Previous page")
    rows = iter(range(1, ITEMS + 1))

    def item(n: int) -> str:
        return f"/ui/quarantine/{task}:{n}"

    # (name, method, path or a function of the sample's index giving (path, form)), in order:
    # the pages that change nothing first, then those that decide one item each.
    pages: list[tuple[str, Callable[[int], tuple[str, str, dict[str, Any] | None]]]] = [
        ("queue (open, first page)", lambda i: ("GET", "/ui/quarantine?status=open", None)),
        ("queue (filtered by rule)", lambda i: ("GET", "/ui/quarantine?status=open&rule=integer", None)),
        ("queue (filtered by field)", lambda i: ("GET", "/ui/quarantine?status=open&field=location", None)),
        ("queue (filtered by grant code)", lambda i: ("GET", "/ui/quarantine?status=open&grant_code=NIH-R01GM7", None)),
        ("queue (any status)", lambda i: ("GET", "/ui/quarantine?status=", None)),
        ("queue (next page)", lambda i: ("GET", second_url, None)),
        ("queue (previous page)", lambda i: ("GET", previous_url, None)),
        ("item", lambda i: ("GET", item(5000 + i), None)),
        (
            "bulk dismissal dialog (all matching)",
            lambda i: ("POST", "/ui/quarantine/bulk", {"step": "confirm", "all": "true", "filter.status": "open"}),
        ),
        ("audit", lambda i: ("GET", "/ui/audit", None)),
        ("audit (asset search)", lambda i: ("GET", f"/ui/audit?asset_id=OK-{i % _CLEAN_ROWS:04d}", None)),
        ("audit (verify chain)", lambda i: ("GET", "/ui/audit/verify", None)),
        # The same verification through the API, for what the page adds to it.
        ("API GET /audit/verify", lambda i: ("GET", "/audit/verify", None)),
        (
            "resubmit, still invalid",
            lambda i: ("POST", f"{item(6000 + i * 4 + 1)}/resubmit", {"value.quantity": "2.5", "note": "bench"}),
        ),
        (
            "resubmit, committed",
            lambda i: ("POST", f"{item(next(rows) * 4 + 2)}/resubmit", {"value.quantity": "2", "note": "bench"}),
        ),
        ("dismiss", lambda i: ("POST", f"{item(next(rows) * 4 + 1)}/dismiss", {"reason": "bench"})),
    ]
    expected = {"resubmit, still invalid": 422}
    out: dict[str, PageTimes] = {}
    for name, request in pages:
        server: list[float] = []
        client: list[float] = []
        for i in range(-2, samples):
            method, path, form = request(i + 2)
            response, server_ms, client_ms = officer.timed(method, path, form)
            assert response.status_code == expected.get(name, 200), (name, path, response.status_code)
            if i >= 0:
                server.append(server_ms)
                client.append(client_ms)
        out[name] = _times(server, client)
    form = {"step": "dismiss", "all": "true", "filter.status": "open", "reason": "bench: bulk"}
    response, bulk_ms, _ = officer.timed("POST", "/ui/quarantine/bulk", form)
    assert response.status_code == 200 and "Dismissed 1,000 of 1,000" in response.text, response.text[-500:]
    return out, bulk_ms


def _chromium() -> str | None:
    path = os.environ.get("LEDGER_CHROMIUM") or _CHROMIUM
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


# How many times the queue's script swapped fetched results in (ledger/web/static/quarantine.js).
_SWAPS = "Number(document.documentElement.dataset.queueSwaps || 0)"


def _browser_filter_changes(server: _Server, token: str, changes: int) -> tuple[list[float], str | None]:
    """A filter of the queue changed ``changes`` times in Chromium: ms from the select's change
    to the results of the new filter in the page (the script fetches the filter's address and
    swaps its results in)."""
    path = _chromium()
    if path is None:
        return [], "no Chromium (LEDGER_CHROMIUM or /usr/bin/chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [], "playwright is not installed (pip install -e '.[test]')"
    choices = [("Rule", "integer"), ("Rule", "enum"), ("Rule", "pattern"), ("Rule", ""), ("Field", "location")]
    choices += [("Field", ""), ("Status", ""), ("Status", "open")]
    timings: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            page = browser.new_page(base_url=server.base_url)
            page.goto("/ui/sign-in")
            page.get_by_label("Token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ui/")
            page.goto("/ui/quarantine?status=open")
            for i in range(-2, changes):
                label, value = choices[(i + 2) % len(choices)]
                select = page.get_by_role("form", name="Filters").get_by_label(label, exact=True)
                swapped = page.evaluate(_SWAPS)
                t0 = time.perf_counter()
                select.select_option(value)
                # A selector, not a predicate: the page's Content-Security-Policy forbids eval.
                page.wait_for_selector(f'html[data-queue-swaps="{swapped + 1}"]', state="attached")
                if i >= 0:
                    timings.append((time.perf_counter() - t0) * 1000)
        finally:
            browser.close()
    return timings, None


def _run_once(
    url: str, workdir: Path, samples: int, changes: int
) -> tuple[dict[str, PageTimes], float, list[float], str | None]:
    import asyncio

    name = f"ledger_bench_ui_{uuid.uuid4().hex[:8]}"
    bench_url = _with_database(url, name)
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    server: _Server | None = None
    try:
        home = workdir / name
        home.mkdir()
        server = _Server(bench_url, home)
        tokens, task = _setup(server, home)
        asyncio.run(_admin(bench_url, "ANALYZE"))
        officer = _Officer(server, tokens["officer"])
        filter_changes, note = _browser_filter_changes(server, tokens["officer"], changes)
        pages, bulk_ms = _pages(officer, task, samples)
        return pages, bulk_ms, filter_changes, note
    finally:
        if server is not None:
            server.stop()
        asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_ui_bench(url: str, home: Path, *, runs: int, samples: int, changes: int) -> UiBench:
    results = []
    with tempfile.TemporaryDirectory(dir=home if home.is_dir() else None) as tmp:
        for _ in range(runs):
            results.append(_run_once(url, Path(tmp), samples, changes))
    names = list(results[0][0])
    pages = {
        name: PageTimes(
            requests=sum(r[0][name].requests for r in results),
            **{
                field: round(statistics.median(getattr(r[0][name], field) for r in results), 1)
                for field in ("server_p50_ms", "server_p95_ms", "server_max_ms", "client_p50_ms", "client_p95_ms")
            },
        )
        for name in names
    }
    changes_ms = [r[2] for r in results if r[2]]
    return UiBench(
        machine=_machine(),
        runs=runs,
        open_items=ITEMS,
        pages=pages,
        bulk_dismiss_1000_server_ms=round(statistics.median(r[1] for r in results), 1),
        browser_filter_change_p50_ms=round(statistics.median(statistics.median(c) for c in changes_ms), 1)
        if changes_ms
        else None,
        browser_filter_change_p95_ms=round(statistics.median(_percentile(c, 0.95) for c in changes_ms), 1)
        if changes_ms
        else None,
        browser_filter_changes=sum(len(c) for c in changes_ms),
        browser_note=results[0][3],
    )
