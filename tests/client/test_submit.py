"""`ledger submit` against a server played by respx: the tus exchange and its resumption, the
fallback to POST /imports, the retries (connection errors, 5xx, 429, Retry-After in seconds and
as an HTTP-date, the budget of --max-wait, at most 8 attempts), the exit codes and --json.
stamina's testing mode is on, so no retry really sleeps; the waits it would have slept are read
from the backoff hook."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
import stamina

from ledger.cli.main import main
from ledger.client.retry import ATTEMPTS, Backoff, Transient, full_jitter, retry_after
from ledger.client.settings import ConfigError, resolve
from ledger.client.submit import Options, Submitter, state_key, worst

SERVER = "http://ledger.test"
TASK = "7b1c0e7e-0000-4000-8000-000000000001"


@pytest.fixture(autouse=True)
def no_sleeping() -> Iterator[None]:
    # Backoffs are zero, attempts as the code asks (capped at its own 8).
    with stamina.set_testing(True, attempts=ATTEMPTS, cap=True):
        yield


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LEDGER_URL", SERVER)
    monkeypatch.setenv("LEDGER_TOKEN", "secret-token")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path


def manifest(tmp_path: Path, size: int = 100, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def status(state: str = "done", **counts: int) -> dict[str, Any]:
    body = {"task_id": TASK, "status": state, "error": None}
    body.update({"rows_total": 3, "rows_committed": 3, "rows_duplicate": 0, "rows_quarantined": 0, **counts})
    return body


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    return "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events).encode()


class TusServer:
    """A tus server in respx routes: it keeps the offset and records what it was sent."""

    def __init__(self, router: respx.MockRouter, size: int, final: dict[str, Any] | None = None) -> None:
        self.size, self.offset, self.patches, self.metadata = size, 0, [], ""
        self.failures: list[httpx.Response | Exception] = []
        router.options(f"{SERVER}/uploads/").mock(
            return_value=httpx.Response(204, headers={"Tus-Version": "1.0.0", "Tus-Resumable": "1.0.0"})
        )
        self.create = router.post(f"{SERVER}/uploads/").mock(side_effect=self._create)
        self.head = router.head(f"{SERVER}/uploads/u1").mock(side_effect=self._head)
        self.patch = router.patch(f"{SERVER}/uploads/u1").mock(side_effect=self._patch)
        self.events = router.get(f"{SERVER}/imports/{TASK}/events").mock(
            return_value=httpx.Response(200, content=sse(("progress", {"rows_processed": 1}), ("done", {})))
        )
        self.status = router.get(f"{SERVER}/imports/{TASK}").mock(
            return_value=httpx.Response(200, json=final or status())
        )

    def _done(self) -> dict[str, str]:
        return {"Ledger-Import": f"/imports/{TASK}"} if self.offset == self.size else {}

    def _create(self, request: httpx.Request) -> httpx.Response:
        self.metadata = request.headers["Upload-Metadata"]
        assert request.headers["Upload-Length"] == str(self.size)
        return httpx.Response(201, headers={"Location": "/uploads/u1", "Upload-Offset": "0"})

    def _head(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Upload-Offset": str(self.offset), **self._done()})

    def _patch(self, request: httpx.Request) -> httpx.Response:
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        start = int(request.headers["Upload-Offset"])
        if start != self.offset:
            return httpx.Response(409)
        body = request.content
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert request.headers["Upload-Checksum"] == f"sha256 {digest}"
        self.patches.append((start, len(body)))
        self.offset += len(body)
        return httpx.Response(204, headers={"Upload-Offset": str(self.offset), **self._done()})

    def fields(self) -> dict[str, str]:
        pairs = (item.split(" ") for item in self.metadata.split(","))
        return {k: base64.b64decode(v).decode() for k, v in pairs}


async def submit(tmp_path: Path, paths: list[Path], **options: Any) -> tuple[list[Any], Submitter]:
    async with httpx.AsyncClient(base_url=SERVER) as client:
        submitter = Submitter(client, tmp_path / "state", Options(**options))
        outcomes = await submitter.run(paths, 2, lambda _: None)
    return outcomes, submitter


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- the exchange


async def test_uploads_in_chunks_with_the_sha256_as_idempotency_key(tmp_path: Path) -> None:
    path = manifest(tmp_path, 1000)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 1000)
        (outcome,), _ = await submit(tmp_path, [path], chunk_size=300)
    assert server.patches == [(0, 300), (300, 300), (600, 300), (900, 100)]
    assert server.fields() == {"filename": "m.csv", "idempotency_key": sha(path)}
    assert (outcome.status, outcome.task_id, outcome.code, outcome.rows_committed) == ("done", TASK, 0, 3)
    # Delivered: no state is left for a next run to resume.
    assert list((tmp_path / "state" / "uploads").iterdir()) == []


async def test_a_rerun_resumes_from_the_servers_offset(tmp_path: Path) -> None:
    path = manifest(tmp_path, 1000)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 1000)
        # The first run: the server takes the first chunk, then the connection is gone for good.
        original = server._patch
        calls = {"n": 0}

        def flaky(request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if calls["n"] > 1:
                raise httpx.ConnectError("the network went away")
            return original(request)

        server.patch.side_effect = flaky
        (first,), _ = await submit(tmp_path, [path], chunk_size=300)
        assert (first.status, first.code) == ("transient_failure", 1)
        assert "ConnectError" in (first.error or "")
        # Kept for the next run, keyed by server, sha256 and size.
        kept = tmp_path / "state" / "uploads" / f"{state_key(SERVER, sha(path), 1000, False)}.json"
        assert json.loads(kept.read_text())["upload_url"] == f"{SERVER}/uploads/u1"
        assert calls["n"] == 1 + ATTEMPTS  # one chunk delivered, then a failed PATCH in each of the 8 attempts
        # The next run asks the server where it stands and sends only what it lacks.
        server.patch.side_effect = original
        (second,), _ = await submit(tmp_path, [path], chunk_size=300)
    assert server.create.call_count == 1 and server.head.call_count >= 1
    assert server.patches == [(0, 300), (300, 300), (600, 300), (900, 100)]
    assert second.status == "done" and not kept.exists()


async def test_a_whole_upload_in_the_state_is_not_sent_again(tmp_path: Path) -> None:
    path = manifest(tmp_path, 500)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 500)
        server.offset = 500  # the server has every byte and named the import; the client died before hearing it
        state = tmp_path / "state" / "uploads" / f"{state_key(SERVER, sha(path), 500, False)}.json"
        state.parent.mkdir(parents=True)
        state.write_text(json.dumps({"server": SERVER, "upload_url": f"{SERVER}/uploads/u1"}))
        (outcome,), _ = await submit(tmp_path, [path])
    assert server.patches == [] and server.create.call_count == 0
    assert outcome.task_id == TASK and outcome.status == "done"


async def test_falls_back_to_post_imports_without_tus(tmp_path: Path) -> None:
    path = manifest(tmp_path, 64)
    with respx.mock(assert_all_called=False) as router:
        router.options(f"{SERVER}/uploads/").mock(return_value=httpx.Response(405))
        post = router.post(f"{SERVER}/imports").mock(
            return_value=httpx.Response(202, json={"task_id": TASK, "status_url": f"/imports/{TASK}"})
        )
        router.get(f"{SERVER}/imports/{TASK}").mock(return_value=httpx.Response(200, json=status("queued")))
        (outcome,), _ = await submit(tmp_path, [path], wait=False, lab="chem-lab")
    request = post.calls.last.request
    assert request.headers["Idempotency-Key"] == sha(path)
    assert b'name="lab"' in request.content and b"chem-lab" in request.content
    assert (outcome.status, outcome.task_id, outcome.code) == ("queued", TASK, 0)


# ---------------------------------------------------------------- retries


async def test_5xx_and_429_are_retried_waiting_at_least_retry_after(tmp_path: Path) -> None:
    path = manifest(tmp_path, 600)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=40), usegmt=True)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 600)
        server.failures = [
            httpx.Response(503, headers={"Retry-After": "7"}),
            httpx.Response(429, headers={"Retry-After": later}),
            httpx.ReadError("reset"),
        ]
        (outcome,), _ = await submit(tmp_path, [path], chunk_size=600)
    assert outcome.status == "done" and server.patch.call_count == 4
    waits = outcome.extra["waits"]
    assert len(waits) == 3
    assert waits[0] >= 7 and 35 <= waits[1] <= 41 and 0 <= waits[2] <= full_jitter(3, lambda a, b: b)


async def test_gives_up_after_8_attempts_and_reports_transient_failure(tmp_path: Path) -> None:
    path = manifest(tmp_path, 10)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 10)
        server.create.side_effect = httpx.ConnectError("refused")
        (outcome,), _ = await submit(tmp_path, [path])
    assert server.create.call_count == ATTEMPTS
    assert (outcome.status, outcome.code) == ("transient_failure", 1)


async def test_a_retry_after_past_max_wait_gives_up_at_once(tmp_path: Path) -> None:
    path = manifest(tmp_path, 10)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 10)
        server.failures = [httpx.Response(503, headers={"Retry-After": "301"})]
        (outcome,), _ = await submit(tmp_path, [path], max_wait=300)
    assert server.patch.call_count == 1
    assert outcome.status == "transient_failure" and "503" in (outcome.error or "")
    assert (tmp_path / "state" / "uploads").is_dir() and list((tmp_path / "state" / "uploads").iterdir())


def test_backoff_is_full_jitter_exponential_within_the_budget() -> None:
    highest = Backoff(max_wait=1e9, rng=lambda low, high: high)
    assert [highest(Transient("x")) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    lowest = Backoff(max_wait=1e9, rng=lambda low, high: low)
    assert lowest(Transient("x", retry_after=12)) == 12  # never sooner than the server asked
    assert lowest(httpx.ConnectError("x")) == 0.0
    assert Backoff(10)(ValueError("a bug is not retried")) is False
    budget = Backoff(max_wait=5, rng=lambda low, high: high)
    assert budget(Transient("x", retry_after=4)) == 4
    assert budget(Transient("x", retry_after=2)) is False  # 4 + 2 > 5


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after("120", now) == 120
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


# ---------------------------------------------------------------- exit codes and --json


@pytest.mark.parametrize(
    ("final", "code"),
    [
        (status("done"), 0),
        (status("done", rows_duplicate=3, rows_committed=0), 0),
        (status("done", rows_quarantined=1, rows_committed=2), 3),
        ({**status("failed"), "error": {"code": "unreadable", "message": "not a CSV"}}, 1),
    ],
)
def test_json_lines_and_exit_codes(env: Path, final: dict[str, Any], code: int) -> None:
    path = manifest(env, 50)
    with respx.mock(assert_all_called=False) as router:
        TusServer(router, 50, final=final)
        got, out, _ = run_cli("submit", "--json", str(path))
    (line,) = out.splitlines()
    body = json.loads(line)
    assert got == code
    assert set(body) >= {"file", "task_id", "status", "rows_total", "rows_committed", "rows_duplicate"}
    assert body["status"] == final["status"] and body["task_id"] == TASK
    assert body["rows_quarantined"] == final["rows_quarantined"]
    assert body["error"] == (None if code != 1 else "not a CSV")


def test_a_refused_token_exits_4_without_retrying(env: Path) -> None:
    path = manifest(env, 50)
    with respx.mock(assert_all_called=False) as router:
        server = TusServer(router, 50)
        server.create.side_effect = None
        server.create.return_value = httpx.Response(401, json={"code": "unauthorized", "message": "bad token"})
        code, out, _ = run_cli("submit", "--json", str(path))
    assert code == 4 and server.create.call_count == 1
    assert json.loads(out)["error"].endswith("401 bad token")


def test_several_files_the_worst_code_wins(env: Path) -> None:
    files = [manifest(env, 50, "a.csv"), manifest(env, 51, "b.csv")]
    with respx.mock(assert_all_called=False) as router:
        router.options(f"{SERVER}/uploads/").mock(return_value=httpx.Response(404))
        router.post(f"{SERVER}/imports").mock(
            side_effect=[
                httpx.Response(202, json={"task_id": TASK}),
                httpx.Response(503, headers={"Retry-After": "1000"}),
            ]
        )
        router.get(f"{SERVER}/imports/{TASK}").mock(return_value=httpx.Response(200, json=status("queued")))
        code, out, _ = run_cli("submit", "--json", "--no-wait", "--parallel", "1", *map(str, files))
    lines = [json.loads(line) for line in out.splitlines()]
    assert sorted(line["status"] for line in lines) == ["queued", "transient_failure"]
    assert code == 1
    assert worst([0, 3, 1, 4]) == 4 and worst([0, 3]) == 3 and worst([]) == 0


def test_usage_errors_exit_2(env: Path) -> None:
    assert run_cli("submit", str(env / "missing.csv"))[0] == 2
    path = manifest(env, 5)
    code, _, err = run_cli("submit", "--receipt", str(env / "r"), str(path))
    assert code == 2 and "--public-key" in err
    with pytest.raises(SystemExit) as refused:
        run_cli("submit", "--chunk-size", "0", str(path))
    assert refused.value.code == 2


def test_the_config_file_must_be_private(tmp_path: Path) -> None:
    config = tmp_path / "ledger" / "config.toml"
    config.parent.mkdir()
    config.write_text('url = "http://127.0.0.1:1"\ntoken = "t"\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")}
    os.chmod(config, 0o644)
    with pytest.raises(ConfigError, match="0600"):
        resolve(None, None, env)
    os.chmod(config, 0o600)
    settings = resolve(None, None, env)
    assert (settings.server, settings.token, settings.state) == ("http://127.0.0.1:1", "t", tmp_path / "s" / "ledger")
    # The flag and the variable come before the file.
    assert resolve("http://other", None, {**env, "LEDGER_TOKEN": "v"}).token == "v"
