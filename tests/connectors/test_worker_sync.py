"""Connectors through the real API and worker, against a real upstream on 127.0.0.1: a
registered source synced by the worker becomes one import whose receipt records every page,
its commit moves the cursor, and a second sync of the same window changes nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from ledger.core.records import parse_receipt
from ledger.testing import Api
from ledger.testing.upstream import INVENTORY_MAP, Fault, Upstream, inventory_records, serving_upstream

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
attempts = 3
max_wait_seconds = 5

[pagination]
type = "cursor"
cursor_path = "meta.next_cursor"
cursor_param = "cursor"
page_size_param = "limit"
page_size = 25

[incremental]
field = "updated_at"
param = "updated_since"
start = "2024-01-01T00:00:00Z"

"""
    + INVENTORY_MAP
)


async def _register(api: Api, url: str, role: str = "manager") -> dict[str, Any]:
    response = await api.client.post(
        "/connectors", headers=api.auth(role), json={"definition": DEFINITION.format(url=url)}
    )
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


async def _sync(api: Api, within: float = 30.0) -> dict[str, Any]:
    """Start a sync as an officer and wait until it and its import have ended."""
    before = (await api.get("/connectors/chem-wms/syncs")).json()
    response = await api.client.post("/connectors/chem-wms/syncs", headers=api.auth("officer"))
    assert response.status_code == 202, response.text
    deadline = asyncio.get_running_loop().time() + within
    while True:
        syncs = (await api.get("/connectors/chem-wms/syncs")).json()
        if len(syncs) > len(before) and syncs[0]["status"] != "running":
            latest: dict[str, Any] = syncs[0]
            if latest["task_id"] is None:
                return latest
            await api.wait(latest["task_id"])
            return dict((await api.get("/connectors/chem-wms/syncs")).json()[0])
        assert asyncio.get_running_loop().time() < deadline, syncs
        await asyncio.sleep(0.05)


async def test_worker_sync_commits_with_provenance_and_moves_the_cursor(api: Api) -> None:
    records = inventory_records(60)
    records[7]["qty"] = "twelve"  # quarantined, with its upstream id in the sync's problems? no: a policy rule
    records[9]["room"] = {"building": "CHM"}  # cannot be mapped: quarantined, named in the sync
    with serving_upstream(Upstream(records)) as upstream:
        await _register(api, upstream.url)
        sync = await _sync(api)
        assert sync["status"] == "ok", sync
        assert sync["records"] == 60 and len(sync["pages"]) == 3
        assert [p["records"] for p in sync["pages"]] == [25, 25, 10]
        assert sync["problems"] == [
            {
                "row": 10,
                "upstream_id": "wms-0000009",
                "field": "location",
                "rule": "not_a_value",
                "message": "room holds a JSON dict, not a single value",
            }
        ]
        status = (await api.get(f"/imports/{sync['task_id']}")).json()
        assert "rows_total" in status, (sync, status)
        assert (status["rows_total"], status["rows_committed"], status["rows_quarantined"]) == (60, 58, 2)
        # The receipt on the ledger records each page: URL, cursor range, the body's SHA-256.
        receipt = parse_receipt((await api.get(f"/imports/{sync['task_id']}/receipt")).json()["receipt"].encode())
        assert receipt.source is not None and receipt.source.connector == "chem-wms"
        assert [p.cursor for p in receipt.source.pages] == [None, "25", "50"]
        assert [p.next for p in receipt.source.pages] == ["25", "50", None]
        first = upstream.page({"updated_since": "2024-01-01T00:00:00Z", "limit": "25"})
        assert receipt.source.pages[0].sha256 == hashlib.sha256(json.dumps(first).encode()).hexdigest()
        connector = (await api.get("/connectors/chem-wms")).json()
        assert connector["cursor"] == records[-1]["updated_at"]

        # The same window again: only the boundary's records come back, and they are skipped.
        again = await _sync(api)
        assert again["status"] == "ok" and again["records"] == 0 and again["task_id"] is None
        assert again["skipped"] >= 1
        assets = (await api.get("/assets", params={"limit": 500})).json()["items"]
        assert len(assets) == 58


async def test_a_failing_source_records_the_error_and_keeps_its_cursor(api: Api) -> None:
    records = inventory_records(30)

    def html(number: int, path: str, query: dict[str, str]) -> Fault | None:
        return (
            Fault(status=200, body=b"<html>login</html>", headers={"Content-Type": "text/html"})
            if number == 2
            else None
        )

    with serving_upstream(Upstream(records, fault=lambda n, p, q: None)) as upstream:
        upstream.fault = html
        await _register(api, upstream.url)
        sync = await _sync(api)
        assert sync["status"] == "failed" and sync["task_id"] is None
        assert sync["errors"][0]["code"] == "not_json" and sync["errors"][0]["page"] == 2
        assert (await api.get("/connectors/chem-wms")).json()["cursor"] is None
        upstream.fault = None
        sync = await _sync(api)
        assert sync["status"] == "ok" and sync["records"] == 30


async def test_a_map_naming_a_column_the_policy_lacks_is_refused_with_its_name(api: Api) -> None:
    text = DEFINITION.format(url="http://127.0.0.1:9").replace('description = "name"', 'colour = "name"')
    response = await api.client.post("/connectors", headers=api.auth("manager"), json={"definition": text})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_definition" and any(p.get("key") == "map.colour" for p in body["problems"])
    unknown = text.replace("records = ", "recrods = ")
    response = await api.client.post("/connectors", headers=api.auth("manager"), json={"definition": unknown})
    assert response.status_code == 422 and "recrods" in response.json()["message"]
    # Another lab's source: refused for a lab manager of chem-lab only.
    other = DEFINITION.format(url="http://127.0.0.1:9").replace('lab = "chem-lab"', 'lab = "bio-lab"')
    response = await api.client.post("/connectors", headers=api.auth("manager"), json={"definition": other})
    assert response.status_code == 403
