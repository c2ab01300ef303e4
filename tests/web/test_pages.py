"""The pages over HTTP, without a browser: sessions, CSRF, roles, escaping, and that every
figure is the API's own."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from ledger.db.tokens import create_token
from ledger.testing import Api, manifest
from ledger.testing.web import WebUser, sign_in

CLEAN = manifest("EQ-0001,NIH-R01GM1,equipment,1,CHM-204,2024-01-15,,,10.00,Centrifuge")


async def test_root_redirects_to_the_pages_and_pages_to_sign_in(api: Api) -> None:
    root = await api.client.get("/", follow_redirects=False)
    assert root.status_code == 302 and root.headers["location"] == "/ui/"
    page = await api.client.get("/ui/imports?cursor=x", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/sign-in?next=%2Fui%2Fimports%3Fcursor%3Dx"
    sign_in_page = await api.client.get("/ui/sign-in")
    assert sign_in_page.status_code == 200
    assert '<label for="token">Token</label>' in sign_in_page.text
    assert ">Sign in</button>" in sign_in_page.text


async def test_sign_in_sets_a_strict_http_only_session_cookie_and_sign_out_ends_it(api: Api) -> None:
    async with WebUser(api.client) as user:
        await user.get("/ui/sign-in")
        response = await user.post("/ui/sign-in", {"token": api.tokens["manager"], "next": "/ui/imports"})
        assert response.status_code == 303 and response.headers["location"] == "/ui/imports"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("ledger_session=")
        for attribute in ("httponly", "samesite=strict", "path=/", "max-age=28800"):
            assert attribute in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # served over plain http here
        home = await user.get("/ui/")
        assert home.status_code == 200 and "Signed in as <strong>lab manager</strong>" in home.text
        # The nav shows what a lab manager can use, and not the admin's tokens page.
        assert 'href="/ui/imports/new"' in home.text and 'href="/ui/tokens"' not in home.text
        out = await user.post("/ui/sign-out")
        assert out.status_code == 303 and out.headers["location"] == "/ui/sign-in"
        assert "Max-Age=0" in out.headers["set-cookie"]
        # The old cookie is worth nothing now, even sent again by hand.
        secret = cookie.split(";")[0].split("=", 1)[1]
        again = await api.client.get("/ui/", cookies={"ledger_session": secret}, follow_redirects=False)
        assert again.status_code == 303


async def test_the_session_cookie_is_secure_over_https(api: Api) -> None:
    async with WebUser(api.client) as user:
        await user.get("https://testserver.local/ui/sign-in")
        response = await user.post("https://testserver.local/ui/sign-in", {"token": api.tokens["auditor"]})
        assert response.status_code == 303
        assert "secure" in response.headers["set-cookie"].lower()


async def test_a_bad_or_expired_token_is_a_401_page_and_changes_nothing(api: Api, db: Any) -> None:
    expired, row = await create_token(db, role="auditor")
    await db.execute("UPDATE tokens SET expires_at = now() - interval '1 day' WHERE id = $1", row.id)
    async with WebUser(api.client) as user:
        await user.get("/ui/sign-in")
        for token, says in (
            ("ldg_" + uuid.uuid4().hex, "not valid"),
            (expired, "has expired"),
            ("", "Enter a token"),
        ):
            response = await user.post("/ui/sign-in", {"token": token})
            assert response.status_code == 401 and says in response.text
            assert "ledger_session" not in response.headers.get("set-cookie", "")
    assert await db.fetchval("SELECT count(*) FROM web_sessions") == 0


async def test_forged_or_missing_csrf_is_403_and_changes_nothing(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["admin"]) as user:
        before = (await api.get("/tokens")).json()
        for csrf in ("", "forged", user.csrf[:-1] + ("A" if user.csrf[-1] != "A" else "B")):
            response = await user.post("/ui/tokens", {"role": "auditor", "label": "forged"}, csrf=csrf)
            assert response.status_code == 403, response.text
            assert "csrf_failed" in response.text
        assert (await api.get("/tokens")).json() == before
        # Nor can a sign-in form be posted without the token of its page.
        async with WebUser(api.client) as stranger:
            response = await stranger.post("/ui/sign-in", {"token": api.tokens["admin"]}, csrf="")
            assert response.status_code == 403


async def test_a_role_that_may_not_see_a_page_gets_the_403_page(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        for path in ("/ui/imports/new", "/ui/tokens"):
            response = await user.get(path)
            assert response.status_code == 403, path
            assert response.headers["content-type"].startswith("text/html")
            assert "You may not see this page as compliance officer" in response.text
        # Nor may it act: refused before the form is read, and nothing changes.
        response = await user.post("/ui/tokens", {"role": "admin"})
        assert response.status_code == 403
        assert len((await api.get("/tokens")).json()) == len(api.tokens)


async def test_an_expired_session_or_a_revoked_token_ends_the_session(api: Api, db: Any) -> None:
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        assert (await user.get("/ui/imports")).status_code == 200
        await db.execute("UPDATE web_sessions SET expires_at = now() - interval '1 second'")
        response = await user.get("/ui/imports")
        assert response.status_code == 303 and "ended=1" in response.headers["location"]
        # A form posted on an ended session is a 401 page, and does nothing.
        post = await user.post("/ui/imports/" + str(uuid.uuid4()) + "/cancel")
        assert post.status_code == 401 and "session_required" in post.text
    async with await sign_in(api.client, api.tokens["auditor"]) as user:
        await api.client.delete(f"/tokens/{await _token_id(api, 'auditor')}", headers=api.auth("admin"))
        assert (await user.get("/ui/")).status_code == 303
        assert (await user.get("/imports")).status_code == 401


async def _token_id(api: Api, role: str) -> str:
    tokens = (await api.get("/tokens")).json()
    (found,) = [t for t in tokens if t["role"] == role]
    return str(found["id"])


async def test_the_import_pages_show_the_apis_figures_and_escape_what_users_wrote(api: Api) -> None:
    # The spool keeps a filename's last path segment: what is left is still markup.
    hostile = "<img src=x onerror=alert(1)><svg onload=alert(2)>.csv"
    cell = manifest('EQ-0009,NIH-R01GM1,<b>gadget</b>,1,CHM-204,2024-01-15,,,10.00,"<script>alert(2)</script>"')
    task = (await api.run(cell, filename=hostile))["task_id"]
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        listing = await user.get("/ui/imports")
        assert listing.status_code == 200
        assert "<caption>Imports</caption>" in listing.text
        assert "<img src=x" not in listing.text and "<svg" not in listing.text
        assert "&lt;img src=x onerror=alert(1)&gt;&lt;svg onload=alert(2)&gt;.csv" in listing.text
        page = await user.get(f"/ui/imports/{task}")
        assert page.status_code == 200
        assert "<img src=x" not in page.text and "<svg" not in page.text
        assert re.search(r'role="status"[^>]*>done<', page.text)
        assert "<caption>Outcome</caption>" in page.text
        for link in ("Error report (CSV)", "Rows", "Receipt"):
            assert f">{link}</a>" in page.text
        # The error report the page links to is the API's, through the session cookie.
        report = await user.get(f"/imports/{task}/errors")
        assert report.status_code == 200 and "gadget" in report.text


async def test_another_labs_import_is_not_found_and_not_listed(api: Api) -> None:
    task = (await api.run(CLEAN, role="manager"))["task_id"]
    async with await sign_in(api.client, api.tokens["manager2"]) as user:
        page = await user.get(f"/ui/imports/{task}")
        assert page.status_code == 404
        listing = await user.get("/ui/imports")
        assert task not in listing.text and "chem-lab" not in listing.text.split("<main", 1)[1]


async def test_a_failed_import_shows_its_error_and_never_success(api: Api) -> None:
    drift = b"asset_id,colour\nEQ-1,red\n"
    body = await api.run(drift)
    assert body["status"] == "failed"
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        page = await user.get(f"/ui/imports/{body['task_id']}")
        assert page.status_code == 200
        assert re.search(r'role="status"[^>]*>failed<', page.text)
        assert body["error"]["code"] in page.text
        assert "success" not in page.text.lower()
        assert "<caption>Outcome</caption>" not in page.text


@pytest.mark.parametrize("inline_worker", [False])
async def test_cancel_from_the_page_cancels_through_the_service(api: Api) -> None:
    accepted = await api.submit(CLEAN)
    task = accepted.json()["task_id"]  # queued: no worker takes it
    async with await sign_in(api.client, api.tokens["manager"]) as user:
        page = await user.get(f"/ui/imports/{task}")
        assert re.search(r'role="status"[^>]*>queued<', page.text) and ">Cancel</button>" in page.text
        response = await user.post(f"/ui/imports/{task}/cancel")
        assert response.status_code == 303 and response.headers["location"] == f"/ui/imports/{task}"
        assert (await api.get(f"/imports/{task}")).json()["status"] == "cancelled"
        page = await user.get(f"/ui/imports/{task}")
        assert re.search(r'role="status"[^>]*>cancelled<', page.text) and ">Cancel</button>" not in page.text
        # Again: the import has ended, which the page says with the API's code.
        again = await user.post(f"/ui/imports/{task}/cancel")
        assert again.status_code == 409 and "already_finished" in again.text
        assert (await user.post(f"/ui/imports/{uuid.uuid4()}/cancel")).status_code == 404


async def test_tokens_page_creates_a_token_shown_once_and_revokes(api: Api) -> None:
    async with await sign_in(api.client, api.tokens["admin"]) as user:
        page = await user.get("/ui/tokens")
        assert page.status_code == 200 and "<caption>Tokens</caption>" in page.text
        created = await user.post(
            "/ui/tokens", {"role": "lab_manager", "labs": ["chem-lab", "bio-lab"], "label": "<i>Ana</i>"}
        )
        assert created.status_code == 201, created.text
        secret = re.search(r'id="new-token" readonly value="(ldg_[^"]+)"', created.text)
        assert secret, created.text
        assert "<i>Ana</i>" not in created.text and "&lt;i&gt;Ana&lt;/i&gt;" in created.text
        # The token works, for its labs.
        who = await api.client.get("/labs", headers={"Authorization": f"Bearer {secret.group(1)}"})
        assert sorted(lab["name"] for lab in who.json()) == ["bio-lab", "chem-lab"]
        # Shown once: the list never has it.
        listed = await user.get("/ui/tokens")
        assert secret.group(1) not in listed.text
        invalid = await user.post("/ui/tokens", {"role": "lab_manager"})
        assert invalid.status_code == 422 and "lab_required" in invalid.text
        token_id = next(t["id"] for t in (await api.get("/tokens")).json() if t["label"] == "<i>Ana</i>")
        revoked = await user.post(f"/ui/tokens/{token_id}/revoke")
        assert revoked.status_code == 303
        gone = await api.client.get("/labs", headers={"Authorization": f"Bearer {secret.group(1)}"})
        assert gone.status_code == 401
