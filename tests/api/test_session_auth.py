"""The API accepts a browser's session cookie (ledger.services.sessions) when there is no
bearer token, and then requires the session's CSRF token on every request that is not a GET
or HEAD: what the pages' scripts and the browser's tus client use."""

from __future__ import annotations

from ledger.testing import Api, manifest
from ledger.testing.web import sign_in

CLEAN = manifest("SA-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Session")


async def test_a_session_cookie_authenticates_api_reads(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        response = await user.get("/imports")
        assert response.status_code == 200 and response.json() == {"items": [], "next": None}
        # The session speaks for its token's role and labs: a lab manager is no admin.
        assert (await user.get("/tokens")).status_code == 403
    # Without a session or a token: 401 as always.
    assert (await api.client.get("/imports")).status_code == 401


async def test_a_cookie_request_that_changes_something_needs_the_csrf_header(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        files = {"file": ("m.csv", CLEAN, "text/csv")}
        for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": user.csrf + "x"}):
            refused = await user.request("POST", "/imports", files=files, headers=headers)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "csrf_failed"
        assert (await api.get("/imports", role="manager")).json()["items"] == []  # nothing created
        accepted = await user.request("POST", "/imports", files=files, headers={"X-CSRF-Token": user.csrf})
        assert accepted.status_code == 202, accepted.text
        task = accepted.json()["task_id"]
        await api.wait(task)
        # A GET needs no CSRF token; nor does HEAD.
        assert (await user.get(f"/imports/{task}")).json()["status"] == "done"


async def test_a_bearer_token_wins_over_a_cookie(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        # The bearer header is used as it is, without a CSRF token (no browser sends one by itself).
        response = await user.request("GET", "/tokens", headers=api.auth("admin"))
        assert response.status_code == 200
        bad = await user.request("GET", "/imports", headers={"Authorization": "Bearer ldg_nope"})
        assert bad.status_code == 401


async def test_an_ended_session_is_401_on_the_api(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        await user.post("/ui/sign-out")
        # The browser would have dropped the cookie; one kept by hand is worth nothing.
        response = await api.client.get("/imports", headers={"Cookie": f"ledger_session={'x' * 43}"})
        assert response.status_code == 401 and response.json()["code"] == "unauthorized"
