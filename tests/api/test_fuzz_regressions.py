"""What the schema fuzzer (tests/api/test_schema_fuzz.py) found, each pinned by a focused test:
bad input gets a 4xx in our Error shape, never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.testing import Api
from ledger.testing.checkout import ROOT

DIRTY = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()


def _error(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert isinstance(body["code"], str) and isinstance(body["message"], str), body
    return body


async def test_options_needs_a_token_like_every_other_method(api: Api) -> None:
    """OPTIONS skipped the token middleware (Litestar exempts it by default), and the route's
    guards then failed for want of a principal: 500 on every guarded path."""
    for path in ("/imports/x", "/audit/head", "/tokens", "/quarantine/bulk"):
        anonymous = await api.client.options(path)
        _error(anonymous, 401)
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        allowed = await api.client.options(path, headers=api.auth("admin"))
        assert allowed.status_code == 204, (path, allowed.text)
        refused = await api.client.options("/tokens", headers=api.auth("manager"))
        _error(refused, 403)


def _answered(response: httpx.Response) -> int:
    """Not a 500; an error in our shape."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        _error(response, response.status_code)
    return response.status_code


# Row 3 of the dirty manifest is quarantined: '٣' and '３' name it.
@pytest.mark.parametrize(
    ("digits", "a_number"), [("¹", False), ("²³", False), ("--1", False), ("٣", True), ("３", True)]
)
async def test_numbers_in_other_scripts_are_read_or_refused(api: Api, digits: str, a_number: bool) -> None:
    """A cursor or a row number that str.isdigit accepts but int() refuses ('¹') was parsed with
    int() anyway: 500. Decimal digits of any script are a number to int() ('٣' is 3): those may
    name a row."""
    task = (await api.run(DIRTY))["task_id"]
    for path in ("/quarantine", "/assets", f"/imports/{task}/rows"):
        _answered(await api.get(path, role="officer", params={"cursor": digits}))
    item = _answered(await api.get(f"/quarantine/{task}:{digits}", role="officer"))
    assert item == (200 if a_number else 404)
    officer = api.auth("officer")
    if not a_number:
        dismissal = await api.client.post(f"/quarantine/{task}:{digits}/dismiss", json={"reason": "r"}, headers=officer)
        _error(dismissal, 404)
        body = {"action": "dismiss", "ids": [f"{task}:{digits}"], "reason": "r"}
        bulk = await api.client.post("/quarantine/bulk", json=body, headers=officer)
        assert bulk.status_code == 200 and bulk.json()["acted"] == 0, bulk.text


async def test_accounting_after_the_items_were_acted_on_as_a_fuzzer_would(api: Api, tmp_path: Path) -> None:
    """A real import with quarantined rows, its items resubmitted, dismissed, superseded and
    acted on again through the API, with ids spelt every way the service accepts and text from
    all over Unicode: GET /imports/{id}/accounting still answers, and every row is counted once."""
    task = (await api.run(DIRTY))["task_id"]
    officer = api.auth("officer")
    actions: list[tuple[str, dict[str, Any]]] = [
        (f"/quarantine/{task}:10/resubmit", {"values": {}, "note": "é\u2028\U0001f600\n"}),
        (f"/quarantine/{task}:11/resubmit", {"values": {}}),  # 409 revised_since, recorded
        (f"/quarantine/{task}:11/resubmit", {"values": {}, "supersede": True, "policy": "current"}),
        (f"/quarantine/{task.upper()}:05/resubmit", {"values": {"quantity": " 2 "}}),
        (f"/quarantine/{{{task}}}:4/dismiss", {"reason": "\ufeff\u00a0reason\U0010ffff"}),
        (f"/quarantine/{task}:1_2/dismiss", {"reason": "twelve"}),
        (f"/quarantine/{task}:12/resubmit", {"values": {}}),  # 409: already dismissed
        (f"/quarantine/{task}:3/dismiss", {"reason": "a\u0000b"}),  # 422: refused, not recorded
        (
            "/quarantine/bulk",
            {"action": "dismiss", "ids": [f"{task}:6", f"{task}:06", f"{task.upper()}:6", f"{task}:7"], "reason": "x"},
        ),
        ("/quarantine/bulk", {"action": "requeue", "filter": {"task_id": task}}),
    ]
    for path, body in actions:
        response = await api.client.post(path, json=body, headers=officer)
        assert response.status_code < 500, (path, response.text)
    for role in ("manager", "officer", "auditor", "admin"):
        response = await api.get(f"/imports/{task}/accounting", role=role)
        assert response.status_code == 200, (role, response.text)
        account = response.json()
        assert account["complete"] is True, account
        assert (account["quarantined"], account["open"], account["resolved"], account["dismissed"]) == (8, 1, 3, 4)
        assert account["resolved"] == account["resolved_committed"] + account["resolved_duplicate"]
