"""Upstream faults through the worker path (the API starts the sync, the app's own worker runs
it) against a real upstream on 127.0.0.1: a 429 pauses the whole source for its Retry-After;
503s and a connection cut mid-body are retried (each page's provenance is the body that came
whole); a 503 that never passes ends the sync partial, with what was read committed and the
cursor where that data is complete; a cursor that repeats ends it failed, nothing committed.
The worker path has no virtual clock: the definitions keep attempts and waits small, so the
real waits stay about a second a test."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from typing import Any

from ledger.testing import Api
from ledger.testing.upstream import INVENTORY_MAP, Fault, Upstream, inventory_records, serving_upstream

# Cursor pagination fetches one page after the other; offset pagination asks for up to
# max_in_flight pages at once.
CURSOR = """
type = "cursor"
cursor_path = "meta.next_cursor"
cursor_param = "cursor"
page_size_param = "limit"
page_size = 10
"""
OFFSET = """
type = "offset"
offset_param = "offset"
page_size_param = "limit"
page_size = 10
"""

DEFINITION = (
    """
name = "chem-wms"
lab = "chem-lab"
policy = "lab-inventory"
base_url = "{url}"
resource = "/inventory"
records = "data.items"
key = "id"
max_in_flight = 4
attempts = {attempts}
max_wait_seconds = 5

[pagination]
{pagination}

[incremental]
field = "updated_at"
param = "updated_since"
start = "2024-01-01T00:00:00Z"

"""
    + INVENTORY_MAP
)


async def _register(api: Api, url: str, *, pagination: str = CURSOR, attempts: int = 4) -> None:
    text = DEFINITION.format(url=url, pagination=pagination, attempts=attempts)
    response = await api.client.post("/connectors", headers=api.auth("manager"), json={"definition": text})
    assert response.status_code in (200, 201), response.text


async def _sync(api: Api, within: float = 30.0) -> dict[str, Any]:
    """Start a sync as an officer; the sync once it and its import (if any) have ended."""
    before = len((await api.get("/connectors/chem-wms/syncs")).json())
    response = await api.client.post("/connectors/chem-wms/syncs", headers=api.auth("officer"))
    assert response.status_code == 202 and response.json()["queued"], response.text
    deadline = asyncio.get_running_loop().time() + within
    while True:
        syncs = (await api.get("/connectors/chem-wms/syncs")).json()
        if len(syncs) > before and syncs[0]["status"] != "running":
            latest: dict[str, Any] = syncs[0]
            if latest["task_id"] is None:
                return latest
            await api.wait(latest["task_id"])
            return dict((await api.get("/connectors/chem-wms/syncs")).json()[0])
        assert asyncio.get_running_loop().time() < deadline, syncs
        await asyncio.sleep(0.05)


async def _assets(api: Api) -> dict[str, int]:
    """Every current asset's revision, by asset id, through GET /assets: a record committed
    twice would show as a second revision."""
    revisions: dict[str, int] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        body = (await api.get("/assets", params=params)).json()
        revisions.update({item["asset_id"]: item["revision"] for item in body["items"]})
        cursor = body["next"]
        if not cursor:
            return revisions


def _once(records: list[dict[str, Any]]) -> dict[str, int]:
    return {r["tag"]: 1 for r in records}


async def _verified(api: Api) -> None:
    response = await api.get("/audit/verify", role="auditor")
    assert response.status_code == 200 and response.json()["ok"] is True, response.text


def _sha256(upstream: Upstream, query: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(upstream.page(query)).encode()).hexdigest()


async def test_a_429_pauses_the_whole_source_and_503s_and_a_cut_body_are_retried(api: Api) -> None:
    records = inventory_records(55)
    asked: Counter[str] = Counter()
    lock = threading.Lock()

    def faults(number: int, path: str, query: dict[str, str]) -> Fault | None:
        offset = query["offset"]
        with lock:
            asked[offset] += 1
            seen = asked[offset]
        if offset == "10" and seen == 1:
            return Fault(status=429, headers={"Retry-After": "1"}, body=b"slow down")
        # Every other answer takes a moment: the 429 (among the first four requests, sent at
        # once) reaches the worker before any other answer, so every request after those four
        # is sent knowing of the pause.
        time.sleep(0.2)
        if offset in ("20", "40") and seen == 1:
            return Fault(status=503, body=b"busy")
        if offset == "30" and seen == 1:
            return Fault(cut_after=40)
        return None

    with serving_upstream(Upstream(records, fault=faults)) as upstream:
        await _register(api, upstream.url, pagination=OFFSET)
        sync = await _sync(api)
        log = list(upstream.log)

    assert sync["status"] == "ok" and sync["errors"] == [], sync
    assert sync["records"] == 55 and [p["records"] for p in sync["pages"]] == [10, 10, 10, 10, 10, 5]
    assert all(p["error"] is None for p in sync["pages"])
    # Each page's provenance is the body that finally came whole, not a failed attempt's.
    for page in sync["pages"]:
        query = {"updated_since": "2024-01-01T00:00:00Z", "limit": "10", "offset": page["cursor"]}
        assert page["sha256"] == _sha256(upstream, query), page
    assert (asked["10"], asked["20"], asked["30"], asked["40"], asked["50"]) == (2, 2, 2, 2, 1)

    # No request of the source landed inside the 429's window: the four sent together before
    # any answer aside, every request came at least Retry-After after the 429 was served.
    limited = next(t for t, target in log if "offset=10" in target)
    assert len({target for _, target in log[:4]}) == 4
    later = [t - limited for t, _ in log[4:]]
    assert later and min(later) >= 1.0, [round(x, 3) for x in later]

    status = await api.wait(sync["task_id"])
    assert (status["rows_committed"], status["rows_duplicate"], status["rows_quarantined"]) == (55, 0, 0)
    assert await _assets(api) == _once(records)
    await _verified(api)


async def test_a_503_that_never_passes_commits_what_was_read_and_the_next_sync_completes(api: Api) -> None:
    records = inventory_records(60)
    with serving_upstream(Upstream(records)) as upstream:
        upstream.fault = lambda n, p, q: Fault(status=503, body=b"down") if q.get("cursor") == "20" else None
        # Two attempts: one wait of at most half a second before the page is given up.
        await _register(api, upstream.url, attempts=2)
        partial = await _sync(api)

        assert partial["status"] == "partial", partial
        assert partial["records"] == 20 and partial["import_status"] == "done"
        [error] = partial["errors"]
        assert error["code"] == "retries_exhausted" and error["page"] == 3 and "503" in error["message"]
        assert [(p["cursor"], p["records"], p["error"]) for p in partial["pages"]] == [
            (None, 10, None),
            ("10", 10, None),
            ("20", 0, "retries_exhausted"),
        ]
        assert partial["pages"][2]["sha256"] is None
        assert await _assets(api) == _once(records[:20])
        # The cursor ends where the data is complete: the last record of the pages read.
        connector = (await api.get("/connectors/chem-wms")).json()
        assert partial["cursor_to"] == connector["cursor"] == records[19]["updated_at"]
        assert connector["cursor_keys"] == [records[19]["id"]]

        upstream.fault = None
        again = await _sync(api)

    assert again["status"] == "ok" and again["errors"] == [], again
    # It starts at the cursor (inclusive): the boundary record comes back and is skipped.
    assert again["cursor_from"] == records[19]["updated_at"]
    assert again["skipped"] == 1 and again["records"] == 40
    status = await api.wait(again["task_id"])
    assert (status["rows_committed"], status["rows_duplicate"]) == (40, 0)
    assert await _assets(api) == _once(records)
    assert (await api.get("/connectors/chem-wms")).json()["cursor"] == records[-1]["updated_at"]
    await _verified(api)


async def test_a_cursor_that_repeats_fails_the_sync_and_commits_nothing(api: Api) -> None:
    records = inventory_records(40)

    def loop(number: int, path: str, query: dict[str, str]) -> Fault | None:
        if query.get("cursor") != "10":
            return None
        page = {"data": {"items": records[10:20]}, "meta": {"next_cursor": "10"}}
        return Fault(status=200, headers={"Content-Type": "application/json"}, body=json.dumps(page).encode())

    with serving_upstream(Upstream(records, fault=loop)) as upstream:
        await _register(api, upstream.url)
        sync = await _sync(api)
        requests = upstream.requests

    assert sync["status"] == "failed" and sync["task_id"] is None, sync
    [error] = sync["errors"]
    assert error["code"] == "pagination_loop" and error["page"] == 2
    assert [(p["cursor"], p["error"]) for p in sync["pages"]] == [(None, None), ("10", "pagination_loop")]
    assert requests == 2  # stopped at the loop, not retried, never fetched again
    assert sync["records"] == 0
    assert (await api.get("/connectors/chem-wms")).json()["cursor"] is None
    assert (await api.get("/imports")).json()["items"] == []
    assert await _assets(api) == {}
