"""The access log: one ``http_request`` line per request, naming the route's template (never the
raw path), the status, the duration, the token's id (never the token) and the client; and a
line when the API starts and when it stops."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from structlog.testing import capture_logs

from ledger.config import Settings
from ledger.db.tokens import find_token
from ledger.logs import configure_logging
from ledger.testing import Api, running_api
from ledger.testing.checkout import POLICIES_DIR


def _requests(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == "http_request"]


async def test_every_request_is_one_line_with_its_route_never_its_path(api: Api, db: Any) -> None:
    found = await find_token(db, api.tokens["manager"])
    assert found is not None
    task_id = str(uuid.uuid4())
    with capture_logs() as logs:
        assert (await api.get(f"/imports/{task_id}", role="manager")).status_code == 404
        assert (await api.client.get(f"/no/such/{task_id}")).status_code == 404
        assert (await api.client.get("/health/live")).status_code == 200
        bad = {"Authorization": "Bearer ldg_not_a_token"}
        assert (await api.client.get(f"/imports/{task_id}", headers=bad)).status_code == 401

    lines = _requests(logs)
    assert [(line["method"], line["status"]) for line in lines] == [
        ("GET", 404),
        ("GET", 404),
        ("GET", 200),
        ("GET", 401),
    ]
    known, unmatched, health, refused = lines
    assert known["route"].startswith("/imports/{task_id") and known["route"].endswith("}")
    assert known["principal"] == str(found.row.id)
    assert unmatched["route"] == "unmatched" and unmatched["principal"] is None
    assert health["route"] == "/health/live" and health["principal"] is None
    assert refused["route"] == known["route"] and refused["principal"] is None
    for line in lines:
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert line["request_bytes"] == 0  # no body
        assert line["client"]  # the test client's address
    # Neither the path as sent nor any token or header is written down.
    text = json.dumps(logs, default=str)
    assert task_id not in text and "/no/such" not in text
    assert "Bearer" not in text and "ldg_not_a_token" not in text
    assert not any(secret in text for secret in api.tokens.values())


async def test_an_upload_is_logged_with_its_status_and_the_bytes_received(api: Api) -> None:
    with capture_logs() as logs:
        response = await api.submit(b"asset_id\n")
    assert response.status_code == 202
    (line,) = _requests(logs)
    assert (line["method"], line["route"], line["status"]) == ("POST", "/imports", 202)
    # The body as it came, multipart framing and all.
    assert line["request_bytes"] == len(response.request.content) > len(b"asset_id\n")


async def test_the_api_says_when_it_starts_and_stops(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, home=tmp_path, policies_dir=POLICIES_DIR)
    with capture_logs() as logs:
        async with running_api(settings, database_url, inline_worker=False) as client:
            started = [line["event"] for line in logs]
            await client.client.get("/health/live")
    events = [line["event"] for line in logs]
    assert "api_started" in started and "api_stopping" not in started
    assert events.index("api_started") < events.index("http_request") < events.index("api_stopping")
    assert events.index("api_stopping") < events.index("api_stopped")


async def test_the_lines_are_json(api: Api) -> None:
    saved = structlog.get_config()
    levels = {name: logging.getLogger(name).level for name in ("alembic", "httpx")}
    out = io.StringIO()
    try:
        configure_logging("info")
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=out))
        await api.client.get("/health/live")
    finally:
        structlog.configure(**saved)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    (line,) = [json.loads(text) for text in out.getvalue().splitlines() if '"http_request"' in text]
    assert line["event"] == "http_request" and line["route"] == "/health/live" and line["status"] == 200
    assert line["level"] == "info" and "timestamp" in line
