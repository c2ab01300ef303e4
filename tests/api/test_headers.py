"""Security headers on every response: routed or not, error or not, public or authenticated."""

from __future__ import annotations

import httpx
import pytest

from ledger.testing import Api, manifest

GOOD = "EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge"
CSP = "default-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
SWAGGER_PAGE_POLICY = CSP + "; style-src 'self' 'unsafe-inline'; img-src 'self' data:"
REDOC_PAGE_POLICY = SWAGGER_PAGE_POLICY + "; font-src 'self' data:"
PAGE_POLICIES = {"/schema/swagger": SWAGGER_PAGE_POLICY, "/schema/redoc": REDOC_PAGE_POLICY}


def _secured(response: httpx.Response, policy: str = CSP) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["content-security-policy"] == policy
    assert response.headers["x-frame-options"] == "DENY"
    assert len(response.headers.get_list("content-security-policy")) == 1


@pytest.mark.parametrize(
    "path",
    ["/policies", "/assets", "/imports/not-an-id", "/audit/head", "/quarantine", "/quarantine/export.csv", "/nowhere"],
)
async def test_authenticated_answers_carry_the_headers_and_no_store(api: Api, path: str) -> None:
    response = await api.get(path, role="officer")
    _secured(response)
    assert response.headers["cache-control"] == "no-store"


async def test_errors_and_refusals_carry_them_too(api: Api) -> None:
    for response in (
        await api.client.get("/policies"),  # 401, from the auth middleware
        await api.client.get("/policies", headers={"Authorization": "Bearer nope"}),
        await api.get("/audit/head", role="manager"),  # 403 from a guard
        await api.client.put("/policies", headers=api.auth("admin")),  # 405 from the router
    ):
        assert response.status_code in (401, 403, 405)
        _secured(response)
        assert response.headers["cache-control"] == "no-store"


async def test_an_import_its_report_and_its_events_carry_them(api: Api) -> None:
    submitted = await api.submit(manifest(GOOD))
    _secured(submitted)
    assert submitted.headers["cache-control"] == "no-store"
    task = submitted.json()["task_id"]
    await api.wait(task)
    for path in (f"/imports/{task}", f"/imports/{task}/errors", f"/imports/{task}/events"):
        response = await api.get(path, role="manager")
        assert response.status_code == 200, path
        _secured(response)
        assert response.headers["cache-control"] == "no-store", path


async def test_public_endpoints_carry_them_and_the_schema_still_loads(api: Api) -> None:
    for path in ("/health/live", "/health/ready", "/schema/openapi.json", "/schema/swagger", "/schema/redoc"):
        response = await api.client.get(path)
        assert response.status_code == 200, path
        # The UIs' pages may style with attributes, data: images and fonts; scripts stay 'self'.
        _secured(response, PAGE_POLICIES.get(path, CSP))
        assert "no-store" not in response.headers.get("cache-control", ""), path
    assert "/imports" in (await api.client.get("/schema/openapi.json")).json()["paths"]
    # Sent with a token anyway, a public answer is not stored either.
    assert (await api.get("/health/live", role="auditor")).headers["cache-control"] == "no-store"
