"""Strict input (issue 15): a truncated multipart body, too many or too large form fields,
control characters in parameters and fields, integers past what the database holds, deep JSON
and JSON under another content type each get a coded 4xx naming what is wrong, never a 500,
and nothing is imported."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.api.inputs import INT64_MAX, JSON_DEPTH_MAX, json_depth
from ledger.ingest.limits import form_fields_bytes_max, form_fields_max
from ledger.testing import Api, manifest

ROW = "EQ-0001,NIH-R01GM123456,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
BOUNDARY = "ledgerboundary7d1c"


def multipart(content: bytes, *, filename: str = "m.csv", close: bool = True, **fields: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + content
    )
    body = b"".join(parts)
    return body + (f"\r\n--{BOUNDARY}--\r\n".encode() if close else b"")


async def post_raw(api: Api, body: bytes) -> Any:
    return await api.client.post(
        "/imports",
        headers={**api.auth("manager"), "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        content=body,
    )


def problem(response: Any, status: int | tuple[int, ...], code: str | None = None) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["code"] and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


async def nothing_imported(api: Api, tmp_path: Path) -> None:
    assert (await api.get("/assets", role="auditor")).json()["items"] == []
    assert (await api.get("/quarantine", role="officer")).json()["items"] == []
    assert [p for p in (tmp_path / "spool").glob("*") if p.is_file()] == []


# ---------------------------------------------------------------- multipart


async def test_a_body_without_its_closing_boundary_is_refused(api: Api, tmp_path: Path) -> None:
    whole = manifest(ROW, ROW.replace("EQ-0001", "EQ-0002"))
    truncated = multipart(whole[: len(whole) - 30], close=False)
    body = problem(await post_raw(api, truncated), (400, 422), "bad_multipart")
    assert "closing boundary" in body["message"]
    await nothing_imported(api, tmp_path)
    # The same body, closed, is imported: the refusal is about the boundary alone.
    response = await post_raw(api, multipart(whole))
    assert response.status_code == 202, response.text
    assert (await api.wait(response.json()["task_id"]))["rows_committed"] == 2


async def test_too_many_form_fields_are_refused(api: Api, tmp_path: Path) -> None:
    fields = {f"extra{i}": "x" for i in range(form_fields_max + 1)}
    body = problem(await post_raw(api, multipart(manifest(ROW), **fields)), 422, "bad_multipart")
    assert str(form_fields_max) in body["message"]
    await nothing_imported(api, tmp_path)


async def test_form_fields_are_limited_in_total_size(api: Api, tmp_path: Path) -> None:
    each = 60_000  # each under the per-field limit, together past the total
    count = form_fields_bytes_max // each + 1
    assert count <= form_fields_max
    fields = {f"extra{i}": "x" * each for i in range(count)}
    body = problem(await post_raw(api, multipart(manifest(ROW), **fields)), 422, "bad_multipart")
    assert str(form_fields_bytes_max) in body["message"]
    await nothing_imported(api, tmp_path)


@pytest.mark.parametrize("field", ["lab", "sheet", "policy", "encoding", "dry_run"])
@pytest.mark.parametrize("char", ["\x00", "\x1b", "\n", "\x7f"])
async def test_a_control_character_in_a_text_field_names_the_field(
    api: Api, tmp_path: Path, field: str, char: str
) -> None:
    value = {"lab": "chem-lab", "sheet": "Sheet1", "policy": "lab-inventory", "encoding": "utf-8", "dry_run": "false"}
    response = await api.submit(manifest(ROW), **{field: value[field][:2] + char + value[field][2:]})
    body = problem(response, (400, 422), "invalid_field")
    assert body["field"] == field and field in body["message"]
    await nothing_imported(api, tmp_path)


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x1f"])
async def test_a_control_character_in_the_filename_is_refused(api: Api, tmp_path: Path, char: str) -> None:
    response = await post_raw(api, multipart(manifest(ROW), filename=f"man{char}ifest.csv"))
    body = problem(response, (400, 422), "invalid_field")
    assert body["field"] == "filename"
    await nothing_imported(api, tmp_path)


async def test_a_tab_in_a_field_is_text(api: Api) -> None:
    response = await post_raw(api, multipart(manifest(ROW), filename="tab\there.csv"))
    assert response.status_code == 202, response.text
    status = await api.wait(response.json()["task_id"])
    assert status["status"] == "done" and status["filename"] == "tab\there.csv"


# ---------------------------------------------------------------- query and path parameters


@pytest.mark.parametrize(
    ("path", "params", "name", "role"),
    [
        ("/assets", {"grant_code": "NIH\x00"}, "grant_code", "auditor"),
        ("/assets", {"category": "a\x00"}, "category", "auditor"),
        ("/assets", {"location": "\x07"}, "location", "auditor"),
        ("/assets", {"lab": "chem\x00lab"}, "lab", "auditor"),
        ("/assets", {"cursor": "\x00"}, "cursor", "auditor"),
        ("/assets/EQ-0001/history", {"grant_code": "NIH\x00"}, "grant_code", "auditor"),
        ("/quarantine", {"status": "open\x00"}, "status", "officer"),
        ("/quarantine", {"rule": "\x00"}, "rule", "officer"),
        ("/quarantine", {"field": "\x1b[31m"}, "field", "officer"),
        ("/quarantine", {"grant_code": "NIH\x00"}, "grant_code", "officer"),
        ("/quarantine", {"task_id": "\x00"}, "task_id", "officer"),
        ("/quarantine/export.csv", {"lab": "chem\x00"}, "lab", "officer"),
        ("/quarantine/export.csv", {"reason": "\x00"}, "reason", "officer"),
        ("/quarantine/export.csv", {"grant_code": "NIH\x00"}, "grant_code", "officer"),
    ],
)
async def test_a_control_character_in_a_query_parameter_is_a_400_naming_it(
    api: Api, path: str, params: dict[str, str], name: str, role: str
) -> None:
    body = problem(await api.get(path, role=role, params=params), 400, "invalid_request")
    assert name in body["message"] and "control characters" in body["message"], body
    assert [p["key"] for p in body["problems"]] == [name]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/assets/EQ%000001/history", "asset_id"),
        ("/imports/a%00b", "task_id"),
        ("/imports/a%00b/rows", "task_id"),
        ("/policies/lab%00inventory", "name"),
        ("/quarantine/x%00y", "item_id"),
    ],
)
async def test_a_control_character_in_a_path_parameter_is_a_400_naming_it(api: Api, path: str, name: str) -> None:
    body = problem(await api.get(path, role="admin"), 400, "invalid_request")
    assert name in body["message"], body


async def test_the_export_never_starts_on_a_bad_filter(api: Api) -> None:
    await api.run(manifest(ROW.replace("NIH-R01GM123456", "XYZ-1")))
    ok = await api.get("/quarantine/export.csv", role="officer", params={"lab": "chem-lab"})
    assert ok.status_code == 200 and ok.text.count("\n") >= 2
    bad = await api.get("/quarantine/export.csv", role="officer", params={"lab": "chem-lab\x00"})
    assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("path", "params", "name"),
    [
        ("/assets", {"limit": str(2**64)}, "limit"),
        ("/assets", {"limit": "-1"}, "limit"),
        ("/quarantine", {"limit": str(2**63)}, "limit"),
        ("/audit/checkpoints", {"from": str(2**63)}, "from"),
        ("/audit/checkpoints", {"to": str(2**70)}, "to"),
        ("/audit/checkpoints", {"to": "-5"}, "to"),
        ("/audit/checkpoints", {"limit": str(2**63)}, "limit"),
        ("/audit/proofs/consistency", {"from": str(2**63)}, "from"),
        ("/audit/proofs/consistency", {"from": "-1"}, "from"),
        ("/audit/proofs/consistency", {"from": "1", "to": str(2**64)}, "to"),
        ("/audit/export", {"from": str(2**63)}, "from"),
        ("/audit/export", {"to": str(2**63)}, "to"),
        ("/audit/proofs/entries/" + str(2**63), {}, "entry_id"),
        ("/audit/proofs/entries/" + str(10**30), {}, "entry_id"),
    ],
)
async def test_an_integer_out_of_range_is_refused(api: Api, path: str, params: dict[str, str], name: str) -> None:
    body = problem(await api.get(path, role="auditor", params=params), (400, 422))
    assert name in body["message"], body


async def test_cursors_and_item_ids_carrying_numbers_past_a_bigint(api: Api) -> None:
    status = await api.run(manifest(ROW.replace("NIH-R01GM123456", "XYZ-1")))
    task = status["task_id"]
    rows = await api.get(f"/imports/{task}/rows", role="manager", params={"cursor": str(2**63)})
    problem(rows, (400, 422), "invalid_cursor")
    forged = base64.urlsafe_b64encode(json.dumps(["2024-01-01T00:00:00Z", task, 2**64]).encode()).decode()
    problem(await api.get("/quarantine", role="officer", params={"cursor": forged}), (400, 422), "invalid_cursor")
    body = problem(await api.get(f"/quarantine/{task}:{2**63}", role="officer"), (400, 404, 422))
    assert body["code"] in ("invalid_item_id", "not_found")
    assert (await api.get(f"/quarantine/{task}:{INT64_MAX}", role="officer")).status_code == 404
    bulk = await api.client.post(
        "/quarantine/bulk",
        headers=api.auth("officer"),
        json={"action": "dismiss", "ids": [f"{task}:{2**64}"], "reason": "r"},
    )
    problem(bulk, (400, 422), "invalid_item_id")


# ---------------------------------------------------------------- JSON bodies


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


async def test_json_nested_too_deep_is_refused(api: Api) -> None:
    status = await api.run(manifest(ROW.replace("NIH-R01GM123456", "XYZ-1")))
    item = f"{status['task_id']}:1"
    headers = {**api.auth("officer"), "Content-Type": "application/json"}
    for path, body in [
        (f"/quarantine/{item}/resubmit", '{"values":' + deep(1000) + "}"),
        (f"/quarantine/{item}/dismiss", '{"reason":' + deep(1000) + "}"),
        ("/quarantine/bulk", '{"action":"dismiss","ids":' + deep(1000) + "}"),
        ("/quarantine/bulk", '{"action":"dismiss","filter":' + "{" + '"a":{' * 40 + "}" * 41 + "}"),
    ]:
        response = await api.client.post(path, headers=headers, content=body.encode())
        problem(response, (400, 422), "json_too_deep")
    # Still open: nothing was decided.
    assert (await api.get(f"/quarantine/{item}", role="officer")).json()["status"] == "open"


def test_json_depth_skips_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert json_depth(b'["\\"[[["]') == 1
    assert json_depth(deep(JSON_DEPTH_MAX).encode()) == JSON_DEPTH_MAX


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_json_body_under_another_content_type_is_415(api: Api, content_type: str | None) -> None:
    status = await api.run(manifest(ROW.replace("NIH-R01GM123456", "XYZ-1")))
    item = f"{status['task_id']}:1"
    headers = {**api.auth("officer"), **({"Content-Type": content_type} if content_type else {})}
    for path, body in [
        (f"/quarantine/{item}/dismiss", {"reason": "not ours"}),
        (f"/quarantine/{item}/resubmit", {"values": {}}),
        ("/quarantine/bulk", {"action": "dismiss", "ids": [item], "reason": "not ours"}),
    ]:
        response = await api.client.post(path, headers=headers, content=json.dumps(body).encode())
        problem(response, 415, "unsupported_media_type")
    assert (await api.get(f"/quarantine/{item}", role="officer")).json()["status"] == "open"
    # Declared JSON (with a charset too), it is taken.
    ok = await api.client.post(
        f"/quarantine/{item}/dismiss",
        headers={**api.auth("officer"), "Content-Type": "application/json; charset=utf-8"},
        content=b'{"reason": "not ours"}',
    )
    assert ok.status_code == 200, ok.text


async def test_a_control_character_in_a_json_string_names_the_field(api: Api) -> None:
    status = await api.run(manifest(ROW.replace("NIH-R01GM123456", "XYZ-1")))
    item = f"{status['task_id']}:1"
    response = await api.client.post(
        f"/quarantine/{item}/resubmit",
        headers=api.auth("officer"),
        json={"values": {"grant_code": "NIH-R01GM123456\x00"}, "note": "two\nlines are fine"},
    )
    body = problem(response, 422, "invalid_field")
    assert body["field"] == "values.grant_code"
    assert (await api.get(f"/quarantine/{item}", role="officer")).json()["status"] == "open"
