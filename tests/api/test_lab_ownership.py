"""Labs: a registry an admin keeps, and asset keys that belong to the lab that committed them.

A row of another lab for an existing key is quarantined (reason and rule ``other_lab``) and
never commits a revision; an officer may transfer the key, which is a decision on the ledger.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.testing import Api, manifest

ROW = "EQ-0100,NIH-R01GM1,equipment,{q},CHM-204,2024-01-15,,,,Centrifuge"


def row(quantity: int = 1) -> bytes:
    return manifest(ROW.format(q=quantity))


async def chem_owns_the_key(api: Api) -> dict[str, Any]:
    status = await api.run(row(1), role="manager")
    assert status["rows_committed"] == 1, status
    return status


async def bio_submits_it(api: Api, quantity: int = 2) -> dict[str, Any]:
    status = await api.run(row(quantity), role="manager2")
    assert status["status"] == "done", status
    return status


async def assets_of(api: Api, role: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await api.get("/assets", role=role)).json()["items"]
    return items


async def verify_ok(api: Api) -> None:
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report["ok"] is True, report


async def test_another_labs_row_for_an_existing_key_is_quarantined_and_changes_nothing(api: Api) -> None:
    await chem_owns_the_key(api)
    before = await assets_of(api, "manager")
    status = await bio_submits_it(api)
    assert (status["rows_committed"], status["rows_duplicate"], status["rows_quarantined"]) == (0, 0, 1)
    # Lab A's asset is untouched, and lab B does not see it.
    assert await assets_of(api, "manager") == before
    assert await assets_of(api, "manager2") == []
    (outcome,) = await api.rows(status["task_id"])
    assert outcome["outcome"] == "quarantined"
    assert "revision" not in outcome or outcome["revision"] is None
    (error,) = outcome["errors"]
    assert (error["field"], error["rule"]) == ("asset_id", "other_lab")
    # It says the asset is another lab's, and nothing about which lab or what it holds.
    assert "another lab" in error["message"] and "chem-lab" not in error["message"]
    page = (await api.get("/quarantine", role="officer", params={"reason": "other_lab"})).json()
    assert [i["id"] for i in page["items"]] == [f"{status['task_id']}:1"]
    assert page["items"][0]["reason"] == "other_lab"
    proof = (await api.get(f"/imports/{status['task_id']}/receipt", role="manager2")).json()
    assert json.loads(proof["receipt"])["rows"] == {"committed": 0, "duplicate": 0, "quarantined": 1, "total": 1}
    await verify_ok(api)


async def test_every_row_of_another_labs_key_is_quarantined_and_a_new_key_still_commits(api: Api) -> None:
    await chem_owns_the_key(api)
    content = manifest(
        ROW.format(q=2),
        ROW.format(q=2),
        "EQ-0101,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,,Balance",
    )
    status = await api.run(content, role="manager2")
    assert (status["rows_committed"], status["rows_duplicate"], status["rows_quarantined"]) == (1, 0, 2)
    assert [a["asset_id"] for a in await assets_of(api, "manager2")] == ["EQ-0101"]


async def test_the_owning_lab_keeps_revising_its_key(api: Api) -> None:
    await chem_owns_the_key(api)
    await bio_submits_it(api)
    status = await api.run(row(5), role="manager")
    assert status["rows_committed"] == 1
    (asset,) = await assets_of(api, "manager")
    assert (asset["revision"], asset["data"]["quantity"]) == (2, 5)


async def test_an_officer_transfers_the_key_and_the_decision_is_on_the_ledger(api: Api) -> None:
    await chem_owns_the_key(api)
    status = await bio_submits_it(api, quantity=7)
    item = f"{status['task_id']}:1"
    response = await api.client.post(
        f"/quarantine/{item}/transfer",
        json={"note": "the centrifuge moved to the bio lab in March"},
        headers=api.auth("officer"),
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["result"], result["status"], result["outcome"]) == ("resolved", "resolved", "committed")
    # The key is lab B's now, at the next revision, and lab A no longer lists it.
    assert await assets_of(api, "manager") == []
    (asset,) = await assets_of(api, "manager2")
    assert (asset["revision"], asset["lab"], asset["data"]["quantity"]) == (2, "bio-lab", 7)
    detail = (await api.get(f"/quarantine/{item}", role="officer")).json()
    assert detail["status"] == "resolved"
    (entry,) = detail["history"]
    assert entry["action"] == "transfer"
    assert entry["note"] == "the centrifuge moved to the bio lab in March"
    assert entry["transfer"] == {"from_lab": "chem-lab", "to_lab": "bio-lab"}
    assert entry["correction"]["outcome"] == "committed"
    assert entry["correction"]["ledger_hash"] is not None
    await verify_ok(api)
    # From now on the key is lab B's: lab A's rows for it are the ones quarantined.
    again = await api.run(row(9), role="manager")
    assert (again["rows_committed"], again["rows_quarantined"]) == (0, 1)


async def test_a_resubmit_of_another_labs_key_is_refused_and_records_nothing(api: Api) -> None:
    await chem_owns_the_key(api)
    status = await bio_submits_it(api)
    item = f"{status['task_id']}:1"
    head = (await api.get("/audit/head", role="auditor")).json()["seq"]
    response = await api.client.post(f"/quarantine/{item}/resubmit", json={}, headers=api.auth("officer"))
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "other_lab"
    assert (await api.get("/audit/head", role="auditor")).json()["seq"] == head
    # Correcting the key to one of its own commits as usual.
    fixed = await api.client.post(
        f"/quarantine/{item}/resubmit", json={"values": {"asset_id": "EQ-0200"}}, headers=api.auth("officer")
    )
    assert fixed.status_code == 200, fixed.text
    assert [a["asset_id"] for a in await assets_of(api, "manager2")] == ["EQ-0200"]


async def test_a_transfer_needs_a_reason_another_labs_key_and_an_officer(api: Api) -> None:
    await chem_owns_the_key(api)
    status = await bio_submits_it(api)
    item = f"{status['task_id']}:1"
    no_note = await api.client.post(f"/quarantine/{item}/transfer", json={"note": " "}, headers=api.auth("officer"))
    assert no_note.status_code == 422 and no_note.json()["code"] == "note_required"
    by_manager = await api.client.post(f"/quarantine/{item}/transfer", json={"note": "x"}, headers=api.auth("manager2"))
    assert by_manager.status_code == 403
    # A key that is no other lab's is not transferred: the officer resubmits instead.
    own = await api.client.post(
        f"/quarantine/{item}/transfer",
        json={"note": "x", "values": {"asset_id": "EQ-0300"}},
        headers=api.auth("officer"),
    )
    assert own.status_code == 409 and own.json()["code"] == "not_other_lab", own.text
    assert (await api.get(f"/quarantine/{item}", role="officer")).json()["history"] == []


# ---------------------------------------------------------------- the registry


async def test_admins_register_labs_and_every_role_lists_those_it_acts_for(api: Api) -> None:
    created = await api.client.post("/labs", json={"name": "phys-lab", "title": "Physics"}, headers=api.auth("admin"))
    assert created.status_code == 201, created.text
    assert (created.json()["name"], created.json()["title"]) == ("phys-lab", "Physics")
    again = await api.client.post("/labs", json={"name": "phys-lab"}, headers=api.auth("admin"))
    assert again.status_code == 409 and again.json()["code"] == "lab_exists"
    names = [lab["name"] for lab in (await api.get("/labs", role="officer")).json()]
    assert names == ["bio-lab", "chem-lab", "phys-lab"]
    assert [lab["name"] for lab in (await api.get("/labs", role="manager")).json()] == ["chem-lab"]
    refused = await api.client.post("/labs", json={"name": "x-lab"}, headers=api.auth("officer"))
    assert refused.status_code == 403


@pytest.mark.parametrize("name", ["' OR 1=1 --", "", "-lead", "a" * 65, "lab\x00", "lab name", "ché-lab"])
async def test_a_lab_name_is_letters_digits_and_separators(api: Api, name: str) -> None:
    response = await api.client.post("/labs", json={"name": name}, headers=api.auth("admin"))
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] in ("invalid_lab", "invalid_request", "invalid_field")


async def test_tokens_and_imports_naming_an_unknown_lab_are_refused(api: Api) -> None:
    token = await api.client.post(
        "/tokens", json={"role": "lab_manager", "labs": ["nowhere-lab"]}, headers=api.auth("admin")
    )
    assert token.status_code == 422 and token.json()["code"] == "unknown_lab", token.text
    for lab in ("nowhere-lab", "' OR 1=1 --"):
        response = await api.submit(row(), role="admin", lab=lab)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "unknown_lab"
    await api.client.post("/labs", json={"name": "nowhere-lab"}, headers=api.auth("admin"))
    response = await api.submit(row(), role="admin", lab="nowhere-lab")
    assert response.status_code == 202, response.text
