"""`ledger pull` in-process against a ledger server and an upstream both played by respx: its
exit codes (0, 3, 5, 1, 2, 4; the worst over the sources) and the --json line of each source,
what the sync it records says (POST /connectors/{name}/pulls), and that the upstream's secret
goes to the upstream only. stamina's testing mode is on, so no retry really sleeps."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import stamina

from ledger.cli.main import main
from ledger.client.retry import ATTEMPTS
from ledger.testing.checkout import POLICIES_DIR
from ledger.testing.upstream import INVENTORY_MAP, Upstream, inventory_records

SERVER = "http://ledger.test"
UPSTREAM = "http://wms.test"
TASK = "7b1c0e7e-0000-4000-8000-000000000001"
SYNC = "5d0c2a9e-0000-4000-8000-00000000000a"
LEDGER_TOKEN = "secret-token"
UPSTREAM_SECRET = "Bearer upstream-secret"

_POLICY = (POLICIES_DIR / "lab-inventory.json").read_bytes()
POLICY = {
    "name": "lab-inventory",
    "version": "1",
    "sha256": hashlib.sha256(_POLICY).hexdigest(),
    "title": "Research-lab inventory manifests",
    "descriptor": json.loads(_POLICY),
}

SOURCE = (
    """
name = "{name}"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "{UPSTREAM}"
resource = "/{name}"
auth_header = "Authorization"
auth_env = "BIO_LIMS_TOKEN"
records = "data.items"
key = "id"
max_in_flight = 4
attempts = 2
max_wait_seconds = 2
{top}

[pagination]
type = "page"
page_param = "page"
page_size_param = "limit"
page_size = 20

[incremental]
field = "updated_at"
param = "updated_since"

"""
    + INVENTORY_MAP
    + "{column}\n"
)

Fault = Callable[[dict[str, str]], httpx.Response | None]


@pytest.fixture(autouse=True)
def no_sleeping() -> Iterator[None]:
    # Backoffs are zero; attempts as the code asks (the ledger's 8, the source's `attempts`).
    with stamina.set_testing(True, attempts=ATTEMPTS, cap=True):
        yield


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEDGER_URL", SERVER)
    monkeypatch.setenv("LEDGER_TOKEN", LEDGER_TOKEN)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("BIO_LIMS_TOKEN", UPSTREAM_SECRET)
    return tmp_path


def source(tmp_path: Path, name: str = "bio-lims", *, top: str = "", column: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SOURCE.format(name=name, UPSTREAM=UPSTREAM, top=top, column=column))
    return path


def status(state: str = "done", task: str = TASK, **counts: int) -> dict[str, Any]:
    body: dict[str, Any] = {"task_id": task, "status": state, "error": None}
    body.update({"rows_total": 50, "rows_committed": 50, "rows_duplicate": 0, "rows_quarantined": 0, **counts})
    return body


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()


class Ledger:
    """The server's routes a pull uses: the policy, the source's cursor, the sync's record, and
    an import through POST /imports (no tus) followed to its end."""

    def __init__(
        self,
        router: respx.MockRouter,
        name: str = "bio-lims",
        *,
        task: str = TASK,
        sync: str = SYNC,
        final: dict[str, Any] | None = None,
        cursor: dict[str, Any] | None = None,
    ) -> None:
        self.policy = router.get(f"{SERVER}/policies/lab-inventory").mock(return_value=httpx.Response(200, json=POLICY))
        found = httpx.Response(200, json={"name": name, "lab": "chem-lab", **cursor}) if cursor else None
        self.connector = router.get(f"{SERVER}/connectors/{name}").mock(
            return_value=found or httpx.Response(404, json={"code": "not_found", "message": "no such source"})
        )
        self.pulls = router.post(f"{SERVER}/connectors/{name}/pulls").mock(
            return_value=httpx.Response(201, json={"sync_id": sync})
        )
        self.tus = router.options(f"{SERVER}/uploads/").mock(return_value=httpx.Response(404))
        self.imports = router.post(f"{SERVER}/imports").mock(
            return_value=httpx.Response(202, json={"task_id": task, "status_url": f"/imports/{task}"})
        )
        self.events = router.get(f"{SERVER}/imports/{task}/events").mock(
            return_value=httpx.Response(
                200,
                headers={"Content-Type": "text/event-stream"},
                content=sse(("progress", {"status": "running", "rows_processed": 1}), ("done", {})),
            )
        )
        self.status = router.get(f"{SERVER}/imports/{task}").mock(
            return_value=httpx.Response(200, json=final or status(task=task))
        )

    def recorded(self) -> dict[str, Any]:
        """The body of the (one) POST /connectors/{name}/pulls."""
        assert self.pulls.call_count == 1
        body: dict[str, Any] = json.loads(self.pulls.calls.last.request.content)
        return body


class Wms:
    """The upstream: ``records`` in pages (ledger.testing.upstream's paging, filtered by
    updated_since), unless ``fault`` answers a query first."""

    def __init__(
        self,
        router: respx.MockRouter,
        records: list[dict[str, Any]],
        name: str = "bio-lims",
        fault: Fault | None = None,
    ) -> None:
        self.upstream = Upstream(records)
        self.fault = fault
        self.route = router.get(f"{UPSTREAM}/{name}").mock(side_effect=self._page)

    def _page(self, request: httpx.Request) -> httpx.Response:
        query = dict(request.url.params)
        if self.fault is not None and (answer := self.fault(query)) is not None:
            return answer
        return httpx.Response(200, json=self.upstream.page(query))

    def queries(self) -> list[dict[str, str]]:
        return [dict(call.request.url.params) for call in self.route.calls]


def pull(capsys: pytest.CaptureFixture[str], *files: Path) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["pull", "--json", *map(str, files)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


MEMBERS = {
    "file",
    "task_id",
    "status",
    "rows_total",
    "rows_committed",
    "rows_duplicate",
    "rows_quarantined",
    "error",
    "sync_id",
    "sync_status",
    "pages",
    "records",
    "fetched",
    "skipped",
    "problems",
    "errors",
}


# ---------------------------------------------------------------- a sync delivered


def test_every_row_committed_exits_0(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = source(env)
    with respx.mock() as router:
        server = Ledger(router)
        wms = Wms(router, inventory_records(50))
        code, (line,), err = pull(capsys, path)
    assert code == 0, err
    assert set(line) == MEMBERS
    assert line["file"] == str(path)
    assert (line["task_id"], line["status"], line["error"]) == (TASK, "done", None)
    assert (line["rows_total"], line["rows_committed"], line["rows_quarantined"]) == (50, 50, 0)
    assert (line["sync_id"], line["sync_status"], line["pages"], line["records"], line["skipped"]) == (
        SYNC,
        "ok",
        3,
        50,
        0,
    )
    assert (line["fetched"], line["problems"], line["errors"]) == (50, 0, [])
    # No saved cursor (404): everything was asked for, 20 a page.
    assert all("updated_since" not in q and q["limit"] == "20" for q in wms.queries())
    body = server.recorded()
    assert (body["status"], body["records"], body["cursor_from"]) == ("ok", 50, None)
    assert body["cursor_to"]["value"] == "2024-06-01T00:00:49Z" and body["manifest_sha256"]
    assert [p["records"] for p in body["pages"]] == [20, 20, 10]
    # The manifest went by POST /imports (no tus), naming the sync, the lab and the policy.
    upload = server.imports.calls.last.request.content
    assert b'name="connector_sync"' in upload and SYNC.encode() in upload
    assert b'name="lab"' in upload and b"chem-lab" in upload and b"lab-inventory" in upload
    assert server.tus.call_count == 1 and server.events.call_count == 1
    # The spooled manifest is gone once delivered.
    assert list((env / "state" / "ledger" / "pulls").iterdir()) == []


def test_done_with_quarantined_rows_exits_3(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with respx.mock() as router:
        Ledger(router, final=status(rows_committed=48, rows_quarantined=2))
        Wms(router, inventory_records(50))
        code, (line,), err = pull(capsys, source(env))
    assert code == 3, err
    assert (line["status"], line["sync_status"], line["rows_committed"], line["rows_quarantined"]) == (
        "done",
        "ok",
        48,
        2,
    )
    assert line["error"] is None


# ---------------------------------------------------------------- partial and failed syncs


def test_a_page_failing_every_time_after_earlier_pages_is_partial_exit_5(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def third(query: dict[str, str]) -> httpx.Response | None:
        return httpx.Response(503) if query.get("page") == "3" else None

    with respx.mock() as router:
        server = Ledger(router, final=status(rows_total=40, rows_committed=40))
        wms = Wms(router, inventory_records(50), fault=third)
        code, (line,), err = pull(capsys, source(env))
    assert code == 5, err
    assert (line["status"], line["sync_status"], line["task_id"], line["sync_id"]) == ("done", "partial", TASK, SYNC)
    assert (line["records"], line["pages"], line["rows_committed"]) == (40, 3, 40)
    assert "retries_exhausted" in line["error"] and "503" in line["error"]
    # The source's attempts (2), no more.
    assert [q["page"] for q in wms.queries()].count("3") == 2
    body = server.recorded()
    assert body["status"] == "partial" and body["records"] == 40
    failed = body["pages"][-1]
    assert (failed["error"], failed["sha256"], failed["records"]) == ("retries_exhausted", None, 0)
    assert "page=3" in failed["url"]
    assert [e["code"] for e in body["errors"]] == ["retries_exhausted"] and body["errors"][0]["page"] == 3
    # What was read before it is delivered.
    assert server.imports.call_count == 1


def test_an_html_first_page_fails_the_sync_and_uploads_nothing(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def login(query: dict[str, str]) -> httpx.Response | None:
        if query["page"] != "1":
            return None
        return httpx.Response(200, content=b"<html>Please log in</html>", headers={"Content-Type": "text/html"})

    with respx.mock(assert_all_called=False) as router:
        server = Ledger(router)
        Wms(router, inventory_records(50), fault=login)
        code, (line,), err = pull(capsys, source(env))
    assert code == 1, err
    assert (line["status"], line["sync_status"], line["task_id"], line["sync_id"]) == ("failed", "failed", None, SYNC)
    assert line["records"] == 0 and "not_json" in line["error"] and "text/html" in line["error"]
    body = server.recorded()
    assert body["status"] == "failed" and body["manifest_sha256"] is None
    assert body["errors"][0]["code"] == "not_json" and body["pages"][0]["error"] == "not_json"
    assert server.imports.call_count == 0 and server.tus.call_count == 0


# ---------------------------------------------------------------- refused before the sync


def test_an_unknown_key_exits_2_naming_it_before_any_request(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with respx.mock(assert_all_called=False) as router:
        Ledger(router)
        Wms(router, inventory_records(5))
        code, (line,), _ = pull(capsys, source(env, top="page_sise = 20"))
        assert router.calls.call_count == 0
    assert code == 2
    assert line["status"] == "error" and "page_sise" in line["error"]
    assert line["task_id"] is None and line["sync_id"] is None and line["sync_status"] is None


def test_a_column_the_policy_lacks_exits_2_before_the_upstream(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with respx.mock(assert_all_called=False) as router:
        server = Ledger(router)
        wms = Wms(router, inventory_records(5))
        code, (line,), _ = pull(capsys, source(env, column='colour = "paint.colour"'))
    assert code == 2
    assert line["status"] == "error" and "map.colour" in line["error"] and "'colour'" in line["error"]
    # The policy was asked for; nothing else was.
    assert server.policy.call_count == 1
    assert wms.route.call_count == 0 and server.connector.call_count == 0 and server.pulls.call_count == 0


def test_a_refused_token_exits_4(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with respx.mock(assert_all_called=False) as router:
        server = Ledger(router)
        server.policy.return_value = httpx.Response(401, json={"code": "unauthorized", "message": "bad token"})
        wms = Wms(router, inventory_records(5))
        code, (line,), _ = pull(capsys, source(env))
    assert code == 4
    assert line["status"] == "error" and line["error"].endswith("401 bad token")
    # Not retried, and the upstream never asked.
    assert server.policy.call_count == 1 and wms.route.call_count == 0 and server.pulls.call_count == 0


# ---------------------------------------------------------------- nothing new


def test_nothing_new_upstream_exits_0_without_an_import(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = inventory_records(50)
    last = records[-1]
    with respx.mock(assert_all_called=False) as router:
        server = Ledger(router, cursor={"cursor": last["updated_at"], "cursor_keys": [last["id"]]})
        wms = Wms(router, records)
        code, (line,), err = pull(capsys, source(env))
    assert code == 0, err
    assert (line["task_id"], line["status"], line["error"], line["sync_id"]) == (None, "done", None, SYNC)
    assert (line["sync_status"], line["records"], line["skipped"], line["pages"]) == ("ok", 0, 1, 1)
    # Asked from the saved cursor (inclusive): only the boundary's record came, already committed.
    assert wms.queries()[0]["updated_since"] == last["updated_at"]
    body = server.recorded()
    assert (body["status"], body["records"], body["cursor_from"], body["manifest_sha256"]) == (
        "ok",
        0,
        last["updated_at"],
        None,
    )
    assert server.tus.call_count == 0 and server.imports.call_count == 0


# ---------------------------------------------------------------- the upstream's credential


def test_the_upstream_secret_goes_upstream_only(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with respx.mock() as router:
        Ledger(router)
        wms = Wms(router, inventory_records(50))
        code, _, err = pull(capsys, source(env))
        calls = list(router.calls)
    assert code == 0, err
    upstream = [c.request for c in calls if c.request.url.host == "wms.test"]
    ledger = [c.request for c in calls if c.request.url.host == "ledger.test"]
    assert len(upstream) == wms.route.call_count >= 3 and len(ledger) >= 6
    assert all(r.headers["Authorization"] == UPSTREAM_SECRET for r in upstream)
    assert all(r.headers["Authorization"] == f"Bearer {LEDGER_TOKEN}" for r in ledger)
    assert not any("upstream-secret" in f"{r.headers} {r.url}" or b"upstream-secret" in r.content for r in ledger)
    assert not any(LEDGER_TOKEN in f"{r.headers} {r.url}" for r in upstream)


def test_a_missing_secret_fails_the_sync(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BIO_LIMS_TOKEN")
    with respx.mock(assert_all_called=False) as router:
        server = Ledger(router)
        wms = Wms(router, inventory_records(5))
        code, (line,), err = pull(capsys, source(env))
    assert code == 1, err
    assert (line["status"], line["sync_status"], line["task_id"], line["sync_id"]) == ("failed", "failed", None, SYNC)
    assert "auth_env_missing" in line["error"] and "BIO_LIMS_TOKEN" in line["error"]
    assert wms.route.call_count == 0 and server.imports.call_count == 0
    assert server.recorded()["errors"][0]["code"] == "auth_env_missing"


# ---------------------------------------------------------------- several sources


def test_several_sources_the_worst_code_wins(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def third(query: dict[str, str]) -> httpx.Response | None:
        return httpx.Response(503) if query.get("page") == "3" else None

    tasks = [f"7b1c0e7e-0000-4000-8000-00000000001{i}" for i in range(3)]
    names = ["ok-src", "quarantine-src", "partial-src"]
    finals = [
        status(task=tasks[0]),
        status(task=tasks[1], rows_committed=49, rows_quarantined=1),
        status(task=tasks[2], rows_total=40, rows_committed=40),
    ]
    with respx.mock() as router:
        servers = [
            Ledger(router, name, task=task, sync=f"sync-{name}", final=final)
            for name, task, final in zip(names, tasks, finals, strict=True)
        ]
        # One POST /imports route for all: the sources are pulled one after the other.
        servers[-1].imports.side_effect = [httpx.Response(202, json={"task_id": t}) for t in tasks]
        for name in names:
            Wms(router, inventory_records(50), name=name, fault=third if name == "partial-src" else None)
        code, lines, err = pull(capsys, *(source(env, name) for name in names))
    assert code == 5, err
    assert [(line["sync_id"], line["sync_status"], line["task_id"]) for line in lines] == [
        (f"sync-{name}", s, t) for name, s, t in zip(names, ["ok", "ok", "partial"], tasks, strict=True)
    ]
    assert [line["rows_quarantined"] for line in lines] == [0, 1, 0]

    # With an invalid definition among them, usage (2) is worse than partial (5).
    bad = source(env, "bad-src", top="page_sise = 20")
    with respx.mock() as router:
        Ledger(router, "quarantine-src", final=status(rows_committed=49, rows_quarantined=1))
        Wms(router, inventory_records(50), name="quarantine-src")
        code, lines, err = pull(capsys, source(env, "quarantine-src"), bad)
    assert code == 2, err
    assert [line["status"] for line in lines] == ["done", "error"]


# ---------------------------------------------------------------- a ledger answering no JSON


def test_a_ledger_answering_html_exits_1_and_the_next_source_still_runs(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A proxy's page, or LEDGER_URL naming a web site: an error line for the source, not a
    # traceback that would end the run before the sources after it.
    proxy = httpx.Response(200, content=b"<html>sign in</html>", headers={"Content-Type": "text/html"})
    with respx.mock(assert_all_called=False) as router:
        first = Ledger(router, "first-src")
        Ledger(router, "second-src")
        first.pulls.return_value = httpx.Response(201, json={"recorded": True})  # no sync_id
        Wms(router, inventory_records(5), name="first-src")
        Wms(router, inventory_records(5), name="second-src")
        code, lines, err = pull(capsys, source(env, "first-src"), source(env, "second-src"))
        server = Ledger(router, "html-src")
        server.policy.return_value = proxy
        wms = Wms(router, inventory_records(5), name="html-src")
        html_code, (html_line,), _ = pull(capsys, source(env, "html-src"))
    assert code == 1, err
    assert [line["status"] for line in lines] == ["error", "done"]
    assert "not the JSON object expected" in lines[0]["error"] and lines[0]["sync_id"] is None
    assert html_code == 1
    assert html_line["status"] == "error" and "GET /policies/lab-inventory" in html_line["error"]
    assert "text/html" in html_line["error"] and wms.route.call_count == 0
