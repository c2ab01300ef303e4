"""/connectors by hand, as each role: what each sees, that another lab's source is answered like
an unknown one, registering twice and over another lab's name, the bounds of `limit`, what a
pull must say about itself, and an upload that names a sync it is not the manifest of.

Nothing here fetches: every source points at port 9 of 127.0.0.1 and no sync is started."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx

from ledger.testing import Api, manifest
from ledger.testing.upstream import INVENTORY_MAP

CHEM = "chem-wms"
BIO = "bio-wms"
ROW = "MX-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Pulled"


def source(name: str = CHEM, lab: str = "chem-lab", **extra: str) -> str:
    """A source's TOML definition; ``extra`` adds top-level keys, each value TOML as written."""
    more = "".join(f"{key} = {value}\n" for key, value in extra.items())
    return (
        f"""
name = "{name}"
lab = "{lab}"
policy = "lab-inventory"
base_url = "http://127.0.0.1:9"
records = "items"
key = "id"
{more}
[pagination]
type = "page"
page_size_param = "limit"

"""
        + INVENTORY_MAP
    )


def pull(name: str = CHEM, lab: str = "chem-lab", **overrides: Any) -> dict[str, Any]:
    """What `ledger pull` sends for a sync of ``name`` that found nothing new."""
    return {
        "definition": source(name, lab),
        "status": "ok",
        "records": 0,
        "fetched": 0,
        "skipped": 0,
        "pages": [],
        "errors": [],
        "problems": [],
        "cursor_from": None,
        "cursor_to": None,
        "manifest_sha256": None,
        **overrides,
    }


async def _register(api: Api, role: str, text: str) -> httpx.Response:
    return await api.client.post("/connectors", headers=api.auth(role), json={"definition": text})


async def _pull(api: Api, role: str, name: str, sync: dict[str, Any]) -> httpx.Response:
    return await api.client.post(f"/connectors/{name}/pulls", headers=api.auth(role), json=sync)


def _refusal(response: httpx.Response, name: str) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["code"], body["message"].replace(name, "<name>")


async def test_sources_by_role_and_lab(api: Api) -> None:
    first = await _register(api, "manager", source())
    assert first.status_code == 201, first.text
    again = await _register(api, "manager", source(schedule='"*/5 * * * *"'))
    assert again.status_code == 200, again.text
    assert (again.json()["lab"], again.json()["schedule"]) == ("chem-lab", "*/5 * * * *")
    assert again.json()["registered_at"] == first.json()["registered_at"]
    assert (await _register(api, "manager2", source(BIO, "bio-lab"))).status_code == 201

    seen = {
        role: [c["name"] for c in (await api.get("/connectors", role)).json()]
        for role in ("admin", "officer", "auditor", "manager", "manager2", "multi")
    }
    assert seen == {
        "admin": [BIO, CHEM],
        "officer": [BIO, CHEM],
        "auditor": [BIO, CHEM],
        "manager": [CHEM],
        "manager2": [BIO],
        "multi": [BIO, CHEM],
    }

    # Lab B's manager: lab A's source is answered exactly as a name nobody registered.
    for path in ("/connectors/{}", "/connectors/{}/syncs"):
        theirs = await api.get(path.format(CHEM), "manager2")
        unknown = await api.get(path.format("no-such-wms"), "manager2")
        assert _refusal(theirs, CHEM) == _refusal(unknown, "no-such-wms") == (404, "not_found", "no connector '<name>'")
        assert "chem-lab" not in theirs.text
    assert (await api.get(f"/connectors/{CHEM}", "manager")).status_code == 200

    # A name that is already another lab's: 409, and the source stays as it was.
    taken = await _register(api, "manager2", source(CHEM, "bio-lab"))
    assert (taken.status_code, taken.json()["code"]) == (409, "connector_lab_mismatch")
    # Naming a lab it does not act for: 403 before anything is looked up.
    assert (await _register(api, "manager2", source(CHEM))).status_code == 403
    assert (await _register(api, "officer", source(CHEM))).status_code == 403
    kept = (await api.get(f"/connectors/{CHEM}")).json()
    assert (kept["lab"], kept["schedule"]) == ("chem-lab", "*/5 * * * *")

    syncs = f"/connectors/{CHEM}/syncs"
    for limit in ("1", "100"):
        assert (await api.get(syncs, params={"limit": limit})).status_code == 200
    for limit in ("0", "101", "-1", "x", "99999999999999999999"):
        refused = await api.get(syncs, params={"limit": limit})
        assert (refused.status_code, refused.json()["code"]) == (400, "invalid_request"), (limit, refused.text)

    # A pull over another lab's name: 409 as well, and no sync is recorded for it.
    theirs = await _pull(api, "manager2", CHEM, pull(CHEM, "bio-lab"))
    assert (theirs.status_code, theirs.json()["code"]) == (409, "connector_lab_mismatch")
    assert (await api.get(f"/connectors/{CHEM}/syncs")).json() == []

    # Odd names: a control character is refused; anything else is simply not found.
    assert (await api.get("/connectors/%01")).status_code == 400
    start = await api.client.post("/connectors/%01/syncs", headers=api.auth("officer"))
    assert (start.status_code, start.json()["code"]) == (400, "invalid_request")
    start = await api.client.post("/connectors/no-such-wms/syncs", headers=api.auth("officer"))
    assert (start.status_code, start.json()["code"]) == (404, "not_found")
    for odd in ("caf%C3%A9", "%20", "a" * 5000, "..%2F..", "%F0%9F%92%A5"):
        response = await api.get(f"/connectors/{odd}/syncs")
        assert (response.status_code, response.json()["code"]) == (404, "not_found"), (odd, response.text)
        assert len(response.text) < 500


async def test_what_a_pull_must_say(api: Api) -> None:
    mismatch = await _pull(api, "manager", "other-wms", pull())
    assert (mismatch.status_code, mismatch.json()["code"]) == (422, "name_mismatch")
    unnamed = await _pull(api, "manager", CHEM, pull(records=3))
    assert (unnamed.status_code, unnamed.json()["code"]) == (422, "invalid_sync")
    named = await _pull(api, "manager", CHEM, pull(manifest_sha256="ab" * 32))
    assert (named.status_code, named.json()["code"]) == (422, "invalid_sync")
    assert (await _pull(api, "manager2", CHEM, pull())).status_code == 403

    # Not the documented shape: 400, never a 500 from the database.
    for bad in (
        {"records": -1},
        {"records": 2**53 + 1, "manifest_sha256": "ab" * 32},
        {"skipped": 2**63},
        {"fetched": 2**64 - 1},
        {"status": "done"},
        {"records": 1, "manifest_sha256": "not a sha-256"},
        {"pages": [{"url": "http://127.0.0.1:9/items"}]},
    ):
        response = await _pull(api, "manager", CHEM, pull(**bad))
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["code"] == "invalid_request", (bad, response.text)

    # A definition that is not valid says what is wrong with each key, as the Error schema has it.
    refused = await _register(api, "manager", source(max_in_flight="0", schedule='"every day"'))
    assert (refused.status_code, refused.json()["code"]) == (422, "invalid_definition"), refused.text
    assert {p.get("key") for p in refused.json()["problems"]} == {"max_in_flight", "schedule"}
    assert all(isinstance(p["message"], str) for p in refused.json()["problems"])
    # A string PostgreSQL cannot store (a NUL, escaped in TOML) is refused, not a 500.
    for text in (source(resource='"/items\\u0000"'), source().replace('"tag"', '"t\\u0000ag"')):
        for response in (
            await _register(api, "manager", text),
            await _pull(api, "manager", CHEM, {**pull(), "definition": text}),
        ):
            assert (response.status_code, response.json()["code"]) == (422, "invalid_definition"), response.text

    recorded = await _pull(api, "manager", CHEM, pull())
    assert recorded.status_code == 201, recorded.text
    assert (recorded.json()["origin"], recorded.json()["status"]) == ("client", "ok")
    listed = (await api.get(f"/connectors/{CHEM}/syncs", "manager")).json()
    assert [s["sync_id"] for s in listed] == [recorded.json()["sync_id"]]


async def test_an_upload_names_a_sync_it_is_the_manifest_of(api: Api) -> None:
    content = manifest(ROW)
    digest = hashlib.sha256(content).hexdigest()
    page = {"url": "http://127.0.0.1:9/items?page=1", "cursor": None, "next": None, "sha256": digest, "records": 1}
    # A sync whose pages could not make a receipt the ledger's verifier reads is refused now,
    # not when its import commits.
    for pages in ([], [{**page, "sha256": None}], [{**page, "records": 0, "error": "gone"}]):
        response = await _pull(api, "manager", CHEM, pull(records=1, manifest_sha256=digest, pages=pages))
        assert (response.status_code, response.json()["code"]) == (422, "invalid_pages"), (pages, response.text)
    recorded = await _pull(api, "manager", CHEM, pull(records=1, fetched=1, manifest_sha256=digest, pages=[page]))
    assert recorded.status_code == 201, recorded.text
    sync_id = recorded.json()["sync_id"]

    other = await api.submit(manifest(ROW.replace("Pulled", "Other")), connector_sync=sync_id)
    assert (other.status_code, other.json()["code"]) == (409, "sync_manifest_mismatch"), other.text

    # Lab B's manager naming lab A's sync: as a sync that does not exist.
    theirs = await api.submit(content, role="manager2", connector_sync=sync_id)
    unknown_id = str(uuid.uuid4())
    unknown = await api.submit(content, role="manager2", connector_sync=unknown_id)
    assert _refusal(theirs, sync_id) == _refusal(unknown, unknown_id), (theirs.text, unknown.text)
    assert (theirs.status_code, theirs.json()["code"]) == (404, "not_found")

    # The sync's own manifest: its import's receipt records where it came from.
    accepted = await api.submit(content, connector_sync=sync_id)
    assert accepted.status_code == 202, accepted.text
    done = await api.wait(accepted.json()["task_id"])
    assert (done["status"], done["rows_committed"]) == ("done", 1), done
    synced = (await api.get(f"/connectors/{CHEM}/syncs")).json()[0]
    assert synced["task_id"] == accepted.json()["task_id"]
    receipt = json.loads((await api.get(f"/imports/{synced['task_id']}/receipt")).json()["receipt"])
    assert receipt["source"]["connector"] == CHEM and receipt["source"]["pages"][0]["sha256"] == digest
