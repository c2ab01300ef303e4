"""`ledger token create|list|revoke|rotate` and `ledger lab add|list`, run in-process against a
real database."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.cli.main import _first_admin_token, main
from ledger.testing import Api


class Ran(msgspec.Struct):
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))
    monkeypatch.delenv("LEDGER_TOKEN_TTL_DAYS", raising=False)
    return database_url


async def ledger(*args: str) -> Ran:
    """`ledger ARGS` in a thread (the command runs its own event loop)."""

    def run() -> Ran:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse refusing the arguments
                code = int(exc.code or 0)
        return Ran(code=code, out=out.getvalue(), err=err.getvalue())

    return await asyncio.to_thread(run)


async def listed(token_id: str | None = None) -> Any:
    ran = await ledger("token", "list", "--json")
    assert ran.code == 0, ran.err
    tokens = json.loads(ran.out)
    return tokens if token_id is None else next(t for t in tokens if t["id"] == token_id)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "admin", "--lab", "x"], "act for every lab"),
        (["--role", "auditor", "--lab", "x"], "act for every lab"),
        (["--role", "lab_manager", "--lab", ""], "non-empty"),
        (["--role", "lab_manager"], "at least one lab"),
        (["--role", "auditor", "--expires-in", "0"], "--expires-in"),
        (["--role", "auditor", "--expires-in", "soon"], "--expires-in"),
        (["--role", "root"], "invalid choice"),
    ],
)
async def test_token_create_refuses_bad_arguments(cli_env: str, args: list[str], says: str) -> None:
    ran = await ledger("token", "create", *args)
    assert ran.code == 2
    assert says in ran.err
    assert ran.out == ""
    assert await listed() == []


async def test_create_list_revoke_rotate(cli_env: str, api: Api) -> None:
    made = await ledger("token", "create", "--role", "lab_manager", "--lab", "chem-lab", "--label", "ana")
    assert made.code == 0, made.err
    token = made.last_line
    assert token.startswith("ldg_")
    assert (await api.client.get("/assets", headers={"Authorization": f"Bearer {token}"})).status_code == 200

    forever = await ledger("token", "create", "--role", "auditor", "--expires-in", "none")
    assert forever.code == 0 and "never expires" in forever.err
    short = await ledger("token", "create", "--role", "auditor", "--expires-in", "2")
    assert short.code == 0

    tokens = await listed()
    assert len(tokens) == 9  # the six test tokens and these three
    ana = next(t for t in tokens if t["label"] == "ana")
    assert ana["role"] == "lab_manager" and ana["labs"] == ["chem-lab"]
    assert ana["expires_at"] is not None and ana["last_used_at"] is not None and ana["revoked_at"] is None
    assert tokens[-2]["expires_at"] is None and tokens[-1]["expires_at"] is not None  # oldest first

    table = await ledger("token", "list")
    assert table.code == 0
    heads = table.out.splitlines()[0].split()
    assert heads[:6] == ["id", "role", "labs", "label", "created", "expires"]
    assert ana["id"] in table.out and "ana" in table.out
    assert token not in table.out and "ldg_" not in table.out

    rotated = await ledger("token", "rotate", ana["id"])
    assert rotated.code == 0, rotated.err
    new = rotated.last_line
    assert new.startswith("ldg_") and new != token
    assert (await api.client.get("/assets", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    assert (await api.client.get("/assets", headers={"Authorization": f"Bearer {new}"})).status_code == 200
    assert (await listed(ana["id"]))["revoked_at"] is not None
    replacement = next(t for t in await listed() if t["label"] == "ana" and t["revoked_at"] is None)
    assert replacement["labs"] == ["chem-lab"] and replacement["role"] == "lab_manager"
    assert (await ledger("token", "rotate", ana["id"])).code == 1  # already revoked

    revoked = await ledger("token", "revoke", replacement["id"])
    assert revoked.code == 0 and replacement["id"] in revoked.out
    assert (await api.client.get("/assets", headers={"Authorization": f"Bearer {new}"})).status_code == 401

    for missing in ("00000000-0000-0000-0000-000000000000", "nope"):
        assert (await ledger("token", "revoke", missing)).code == 1
        assert (await ledger("token", "rotate", missing)).code == 1


async def test_token_lifetime_comes_from_the_setting(cli_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_TOKEN_TTL_DAYS", "none")
    assert (await ledger("token", "create", "--role", "auditor")).code == 0
    assert (await listed())[0]["expires_at"] is None


async def test_serve_mints_an_admin_only_on_an_empty_tokens_table(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await _first_admin_token(cli_env)
    assert first is not None
    (admin,) = await listed()
    assert admin["role"] == "admin" and admin["expires_at"] is not None
    assert await _first_admin_token(cli_env) is None
    assert "no admin token is valid" not in capsys.readouterr().err
    assert (await ledger("token", "revoke", admin["id"])).code == 0
    # Every admin revoked: the next start says how to make one, and mints nothing.
    assert await _first_admin_token(cli_env) is None
    assert "ledger token create --role admin" in capsys.readouterr().err
    assert len(await listed()) == 1


# ---------------------------------------------------------------- `ledger lab`


async def test_lab_add_registers_once_and_list_shows_it(cli_env: str) -> None:
    added = await ledger("lab", "add", "phys-lab", "--title", "Physics")
    assert added.code == 0, added.err
    assert "registered lab phys-lab" in added.out
    again = await ledger("lab", "add", "phys-lab")
    assert again.code == 1 and "registered already" in again.err
    listed = await ledger("lab", "list", "--json")
    assert listed.code == 0
    labs = {lab["name"]: lab["title"] for lab in json.loads(listed.out)}
    assert labs["phys-lab"] == "Physics"
    table = await ledger("lab", "list")
    assert any(line.startswith("phys-lab") and line.endswith("Physics") for line in table.out.splitlines())


async def test_lab_add_refuses_a_name_that_is_not_one(cli_env: str) -> None:
    for name in ("' OR 1=1 --", ".x", "a b"):
        ran = await ledger("lab", "add", name)
        assert ran.code == 2 and "not a lab name" in ran.err, (name, ran)


async def test_token_create_refuses_an_unknown_lab_until_it_is_registered(cli_env: str) -> None:
    refused = await ledger("token", "create", "--role", "lab_manager", "--lab", "geo-lab")
    assert refused.code == 2 and "not registered" in refused.err and refused.out == ""
    assert (await ledger("lab", "add", "geo-lab")).code == 0
    made = await ledger("token", "create", "--role", "lab_manager", "--lab", "geo-lab")
    assert made.code == 0 and made.last_line.startswith("ldg_")
