"""401 without a valid token, 403 for a wrong role or a lab the caller names, 404 for another
lab's record (as for an unknown one), JSON bodies with a stable code."""

from __future__ import annotations

import pytest

from ledger.testing import Api, manifest

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"

READ_PATHS = [
    "/imports/00000000-0000-0000-0000-000000000000",
    "/imports/00000000-0000-0000-0000-000000000000/rows",
    "/imports/00000000-0000-0000-0000-000000000000/errors",
    "/assets",
    "/assets/EQ-0001/history",
    "/audit/head",
    "/audit/verify",
    "/policies",
    "/policies/lab-inventory",
]


async def test_missing_or_invalid_token_is_401_everywhere(api: Api) -> None:
    for path in [*READ_PATHS, "/imports"]:
        for authorization in (None, "Bearer", "Bearer nope", "Basic dXNlcjpwYXNz", "ldg_x"):
            headers = {} if authorization is None else {"Authorization": authorization}
            if path == "/imports":
                response = await api.client.post(path, headers=headers, files={"file": ("m.csv", b"x")})
            else:
                response = await api.client.get(path, headers=headers)
            assert response.status_code == 401, (path, authorization)
            assert response.json()["code"] == "unauthorized"
            assert response.json()["message"]


async def test_health_and_schema_need_no_token(api: Api) -> None:
    assert (await api.client.get("/health/live")).status_code == 200
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    schema = await api.client.get("/schema/openapi.json")
    assert schema.status_code == 200 and "/imports" in schema.json()["paths"]


@pytest.mark.parametrize(
    ("role", "allowed"), [("manager", True), ("admin", True), ("officer", False), ("auditor", False)]
)
async def test_only_lab_managers_and_admins_submit(api: Api, role: str, allowed: bool) -> None:
    response = await api.submit(manifest(GOOD), role=role, lab="chem-lab")
    assert response.status_code == (202 if allowed else 403)
    if not allowed:
        assert response.json()["code"] == "forbidden"


async def test_lab_managers_submit_only_for_their_labs(api: Api) -> None:
    other = await api.submit(manifest(GOOD), role="manager", lab="bio-lab")
    assert other.status_code == 403 and other.json()["code"] == "forbidden"
    ambiguous = await api.submit(manifest(GOOD), role="multi")
    assert ambiguous.status_code == 422 and ambiguous.json()["code"] == "lab_required"
    chosen = await api.submit(manifest(GOOD), role="multi", lab="bio-lab")
    assert chosen.status_code == 202
    admin_without_lab = await api.submit(manifest(GOOD), role="admin")
    assert admin_without_lab.status_code == 422


async def test_lab_managers_see_only_their_labs(api: Api) -> None:
    mine = await api.run(manifest(GOOD), role="manager")
    theirs = await api.run(manifest(GOOD.replace("EQ-0001", "EQ-0002")), role="manager2")
    for path in ("", "/rows", "/errors"):
        denied = await api.get(f"/imports/{theirs['task_id']}{path}", role="manager")
        assert denied.status_code == 404 and denied.json()["code"] == "not_found", path
        assert (await api.get(f"/imports/{mine['task_id']}{path}", role="manager")).status_code == 200
    assets = (await api.get("/assets", role="manager")).json()["items"]
    assert [a["asset_id"] for a in assets] == ["EQ-0001"]
    assert (await api.get("/assets", role="manager", params={"lab": "bio-lab"})).json()["items"] == []
    assert (await api.get("/assets/EQ-0002/history", role="manager")).status_code == 404
    everyone = (await api.get("/assets", role="auditor")).json()["items"]
    assert {a["asset_id"] for a in everyone} == {"EQ-0001", "EQ-0002"}
    for role in ("officer", "auditor", "admin"):
        assert (await api.get(f"/imports/{theirs['task_id']}", role=role)).status_code == 200


@pytest.mark.parametrize(("role", "status"), [("manager", 403), ("officer", 200), ("auditor", 200), ("admin", 200)])
async def test_audit_endpoints_by_role(api: Api, role: str, status: int) -> None:
    for path in ("/audit/head", "/audit/verify"):
        response = await api.get(path, role=role)
        assert response.status_code == status
        if status == 403:
            assert response.json()["code"] == "forbidden"


async def test_revoked_tokens_are_refused(api: Api, db: object) -> None:
    await db.execute("UPDATE tokens SET revoked_at = now()")  # type: ignore[attr-defined]
    assert (await api.get("/policies")).status_code == 401


async def test_the_role_is_checked_before_parameters_and_bodies(api: Api) -> None:
    """The guards run before Litestar reads the request: a wrong role is 403 even when the
    parameters (400) or the body (400/422) are wrong too, and the refusal names the roles."""
    checkpoints = await api.get("/audit/checkpoints", role="manager", params={"from": "-1"})
    assert checkpoints.status_code == 403
    assert checkpoints.json() == {
        "code": "forbidden",
        "message": "this action needs one of the roles auditor, compliance_officer, admin; you are lab_manager",
    }
    signing = await api.client.post("/audit/checkpoints", headers=api.auth("officer"))
    assert signing.status_code == 403
    assert signing.json()["message"] == "this action needs one of the roles admin; you are compliance_officer"
    bulk = await api.client.post("/quarantine/bulk", headers=api.auth("auditor"), content=b"not json")
    assert bulk.status_code == 403
    assert bulk.json()["message"] == "this action needs one of the roles compliance_officer, admin; you are auditor"
    cancel = await api.client.delete("/imports/not-a-task-id", headers=api.auth("officer"))
    assert cancel.status_code == 403
    assert (
        cancel.json()["message"] == "this action needs one of the roles lab_manager, admin; you are compliance_officer"
    )
