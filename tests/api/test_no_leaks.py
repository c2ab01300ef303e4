"""Another lab's import, row, quarantine item or receipt answers exactly like an unknown one:
404 not_found with the same message shape, never naming the lab (it was 403 naming it)."""

from __future__ import annotations

import uuid

import httpx

from ledger.testing import Api, manifest

BIO = "EQ-0009,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
BIO_BAD = "EQ-0010,NIH-R01GM1,equipment,-3,CHM-204,2024-01-15,,,10.00,Centrifuge"
UNKNOWN = str(uuid.UUID(int=0x1234, version=4))


def _shape(response: httpx.Response, the_id: str) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["code"], body["message"].replace(the_id, "<id>")


async def test_another_labs_import_answers_like_an_unknown_one(api: Api) -> None:
    theirs = await api.run(manifest(BIO, BIO_BAD), role="manager2")  # bio-lab
    task = theirs["task_id"]
    assert theirs["rows_quarantined"] == 1
    for suffix in ("", "/rows", "/errors", "/accounting", "/receipt", "/events"):
        other = await api.get(f"/imports/{task}{suffix}", role="manager")  # chem-lab only
        unknown = await api.get(f"/imports/{UNKNOWN}{suffix}", role="manager")
        assert _shape(other, task) == _shape(unknown, UNKNOWN) == (404, "not_found", "no import '<id>'"), suffix
        assert "bio-lab" not in other.text, suffix
        assert (await api.get(f"/imports/{task}{suffix}", role="manager2")).status_code == 200, suffix
    cancel = await api.client.delete(f"/imports/{task}", headers=api.auth("manager"))
    cancel_unknown = await api.client.delete(f"/imports/{UNKNOWN}", headers=api.auth("manager"))
    assert _shape(cancel, task) == _shape(cancel_unknown, UNKNOWN)
    assert cancel.status_code == 404 and "bio-lab" not in cancel.text


async def test_another_labs_quarantine_item_answers_like_an_unknown_one(api: Api) -> None:
    theirs = await api.run(manifest(BIO, BIO_BAD), role="manager2")
    item = f"{theirs['task_id']}:2"
    missing = f"{UNKNOWN}:2"
    assert (await api.get(f"/quarantine/{item}", role="manager2")).status_code == 200
    other = await api.get(f"/quarantine/{item}", role="manager")
    unknown = await api.get(f"/quarantine/{missing}", role="manager")
    assert _shape(other, item) == _shape(unknown, missing) == (404, "not_found", "no quarantine item '<id>'")
    assert "bio-lab" not in other.text


async def test_submitting_for_a_lab_one_does_not_act_for_is_still_refused(api: Api) -> None:
    """Naming a lab oneself reveals nothing: that refusal stays a 403."""
    refused = await api.submit(manifest(BIO), role="manager", lab="bio-lab")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
