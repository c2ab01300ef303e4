"""Token lifecycle over the API: expiry, last use, the admin routes (list, create, revoke,
rotate), 401s with WWW-Authenticate, throttled failed logins, and the first-start admin."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ledger.api.auth import FailedLogins
from ledger.config import Settings
from ledger.db.tokens import any_admin, create_first_admin, create_token
from ledger.testing import Api

NIL = "00000000-0000-0000-0000-000000000000"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def days_from_now(moment: str) -> float:
    return (dt.datetime.fromisoformat(moment) - dt.datetime.now(dt.UTC)).total_seconds() / 86_400


async def create(api: Api, **body: Any) -> Any:
    return await api.client.post("/tokens", headers=api.auth("admin"), json=body)


async def test_admins_create_tokens_shown_once_with_the_default_expiry(api: Api) -> None:
    made = await create(api, role="lab_manager", labs=["chem-lab"], label="ana")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["token"].startswith("ldg_")
    info = body["info"]
    assert info["role"] == "lab_manager" and info["labs"] == ["chem-lab"] and info["label"] == "ana"
    assert 89.9 < days_from_now(info["expires_at"]) <= 90
    assert info["revoked_at"] is None and info["last_used_at"] is None
    # The token works, and its listing never shows a secret.
    assert (await api.client.get("/policies", headers=bearer(body["token"]))).status_code == 200
    listed = (await api.get("/tokens")).json()
    mine = next(t for t in listed if t["id"] == info["id"])
    assert mine["last_used_at"] is not None
    assert set(mine) == {"id", "role", "labs", "label", "created_at", "expires_at", "last_used_at", "revoked_at"}
    assert body["token"] not in str(listed)
    assert len(listed) == 7  # the six test tokens and this one


async def test_expiry_can_be_chosen_or_left_out(api: Api) -> None:
    never = (await create(api, role="auditor", expires_in_days=None)).json()["info"]
    assert never["expires_at"] is None
    short = (await create(api, role="auditor", expires_in_days=3)).json()["info"]
    assert 2.9 < days_from_now(short["expires_at"]) <= 3


@pytest.mark.parametrize("settings_overrides", [{"token_ttl_days": 7}])
async def test_the_default_expiry_is_a_setting(api: Api) -> None:
    info = (await create(api, role="auditor")).json()["info"]
    assert 6.9 < days_from_now(info["expires_at"]) <= 7


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"role": "admin", "labs": ["x"]}, "labs_not_allowed"),
        ({"role": "auditor", "labs": ["x"]}, "labs_not_allowed"),
        ({"role": "lab_manager", "labs": [""]}, "invalid_lab"),
        ({"role": "lab_manager", "labs": ["a\x00b"]}, "invalid_lab"),
        ({"role": "lab_manager"}, "lab_required"),
        ({"role": "root"}, "invalid_role"),
        ({"role": "auditor", "expires_in_days": 0}, "invalid_expiry"),
        ({"role": "auditor", "expires_in_days": 10**9}, "invalid_expiry"),
        ({"role": "auditor", "label": "x" * 1000}, "invalid_label"),
    ],
)
async def test_grants_are_checked(api: Api, body: dict[str, Any], code: str) -> None:
    response = await create(api, **body)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == code
    if code == "labs_not_allowed":
        assert "act for every lab" in response.json()["message"]


@pytest.mark.parametrize("role", ["manager", "officer", "auditor"])
async def test_only_admins_manage_tokens(api: Api, role: str) -> None:
    headers = api.auth(role)
    for response in (
        await api.client.get("/tokens", headers=headers),
        await api.client.post("/tokens", headers=headers, json={"role": "admin"}),
        await api.client.delete(f"/tokens/{NIL}", headers=headers),
        await api.client.post(f"/tokens/{NIL}/rotate", headers=headers),
    ):
        assert response.status_code == 403, response.text


async def test_a_revoked_token_is_401_with_www_authenticate(api: Api) -> None:
    made = (await create(api, role="auditor")).json()
    revoked = await api.client.delete(f"/tokens/{made['info']['id']}", headers=api.auth("admin"))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = await api.client.delete(f"/tokens/{made['info']['id']}", headers=api.auth("admin"))
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    refused = await api.client.get("/policies", headers=bearer(made["token"]))
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    for missing in (f"/tokens/{NIL}", "/tokens/not-a-uuid"):
        assert (await api.client.delete(missing, headers=api.auth("admin"))).status_code == 404


async def test_an_expired_token_is_401_token_expired(api: Api, db: Any) -> None:
    await db.execute("UPDATE tokens SET expires_at = now() - interval '1 second' WHERE role = 'auditor'")
    refused = await api.get("/policies", role="auditor")
    assert refused.status_code == 401
    assert refused.json()["code"] == "token_expired"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert (await api.get("/policies", role="officer")).status_code == 200


async def test_every_401_carries_www_authenticate(api: Api) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, bearer("nope")):
        response = await api.client.get("/assets", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")


async def test_rotation_revokes_the_old_secret_and_keeps_the_grant(api: Api) -> None:
    made = (await create(api, role="lab_manager", labs=["chem-lab", "bio-lab"], label="lab", expires_in_days=30)).json()
    rotated = await api.client.post(f"/tokens/{made['info']['id']}/rotate", headers=api.auth("admin"))
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["token"] != made["token"] and new["info"]["id"] != made["info"]["id"]
    assert {k: new["info"][k] for k in ("role", "labs", "label")} == {
        "role": "lab_manager",
        "labs": ["chem-lab", "bio-lab"],
        "label": "lab",
    }
    assert 29.9 < days_from_now(new["info"]["expires_at"]) <= 30
    assert (await api.client.get("/assets", headers=bearer(made["token"]))).status_code == 401
    assert (await api.client.get("/assets", headers=bearer(new["token"]))).status_code == 200
    twice = await api.client.post(f"/tokens/{made['info']['id']}/rotate", headers=api.auth("admin"))
    assert twice.status_code == 409 and twice.json()["code"] == "token_revoked"
    assert (await api.client.post(f"/tokens/{NIL}/rotate", headers=api.auth("admin"))).status_code == 404


async def test_last_use_is_written_at_most_once_a_minute(api: Api, db: Any) -> None:
    assert (await api.get("/policies", role="auditor")).status_code == 200
    first = await db.fetchval("SELECT last_used_at FROM tokens WHERE role = 'auditor'")
    assert first is not None
    assert (await api.get("/policies", role="auditor")).status_code == 200
    assert await db.fetchval("SELECT last_used_at FROM tokens WHERE role = 'auditor'") == first
    await db.execute("UPDATE tokens SET last_used_at = now() - interval '2 minutes' WHERE role = 'auditor'")
    assert (await api.get("/policies", role="auditor")).status_code == 200
    assert await db.fetchval("SELECT last_used_at > now() - interval '1 minute' FROM tokens WHERE role = 'auditor'")


@pytest.mark.parametrize("settings_overrides", [{"auth_failures_per_minute": 3}])
async def test_repeated_failed_logins_are_throttled(api: Api) -> None:
    for _ in range(3):
        assert (await api.client.get("/assets", headers=bearer("guess"))).status_code == 401
    throttled = await api.client.get("/assets", headers=bearer("guess"))
    assert throttled.status_code == 429
    assert throttled.json()["code"] == "too_many_failed_logins"
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    # While throttled, even a right token from that address is refused: guessing gains nothing.
    assert (await api.get("/assets", role="auditor")).status_code == 429
    # Health needs no token and is never throttled.
    assert (await api.client.get("/health/live")).status_code == 200


def test_failed_logins_use_one_minute_windows_and_stay_bounded() -> None:
    now = [0.0]
    counter = FailedLogins(2, clients_max=100, clock=lambda: now[0])
    counter.failed("a")
    assert counter.retry_after("a") is None
    counter.failed("a")
    assert counter.retry_after("a") == 60
    now[0] = 30.5
    assert counter.retry_after("a") == 30
    assert counter.retry_after("b") is None
    now[0] = 60.0
    assert counter.retry_after("a") is None
    for i in range(1_000):
        counter.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(counter) <= 100


async def test_start_up_mints_an_admin_only_on_an_empty_tokens_table(db: Any) -> None:
    first = await create_first_admin(db, expires_in_days=90)
    assert first is not None and first.startswith("ldg_")
    assert await create_first_admin(db) is None
    await db.execute("UPDATE tokens SET revoked_at = now()")
    assert not await any_admin(db)
    # Every admin revoked: a restart does not mint a new one behind anyone's back.
    assert await create_first_admin(db) is None
    await create_token(db, role="admin")
    assert await any_admin(db)


async def test_a_non_admin_token_on_a_fresh_database_prevents_minting(db: Any) -> None:
    await create_token(db, role="auditor")
    assert await create_first_admin(db) is None


def test_the_token_lifetime_setting() -> None:
    assert Settings.from_env({}).token_ttl_days == 90
    assert Settings.from_env({"LEDGER_TOKEN_TTL_DAYS": "30"}).token_ttl_days == 30
    assert Settings.from_env({"LEDGER_TOKEN_TTL_DAYS": "none"}).token_ttl_days is None
    for bad in ("0", "-1", "soon", "99999999"):
        with pytest.raises(ValueError, match="LEDGER_TOKEN_TTL_DAYS"):
            Settings.from_env({"LEDGER_TOKEN_TTL_DAYS": bad})
    assert Settings.from_env({}).auth_failures_per_minute == 10
    with pytest.raises(ValueError, match="LEDGER_AUTH_FAILURES_PER_MINUTE"):
        Settings.from_env({"LEDGER_AUTH_FAILURES_PER_MINUTE": "0"})
