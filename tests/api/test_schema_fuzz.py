"""Schemathesis over every operation of the service's own OpenAPI schema, against the app served
on 127.0.0.1 (a real PostgreSQL, a worker, a token per role).

Each operation is called as the least privileged role its guards admit, with generated
parameters and bodies, valid and invalid, the upload included; the ids of real imports,
quarantine items, ledger entries, assets and (expendable) tokens are mixed into the path
parameters so that the fuzzer gets past 404s and acts on real items. Every answer must be
documented (status, content type, headers, body: our Error shape for every error), and none may
be a 5xx. Deterministic (derandomized) and bounded: MAX_EXAMPLES per operation beyond the
schema's coverage cases, about two minutes for the whole schema on two cores.

The operations are those of the schema the app generates, read when the tests are collected, so
a new route is fuzzed without a change here; the first test checks that the app serves that
same schema. (Schemathesis' fixture-loaded schemas cannot be used: they need a pytest private
attribute that pytest 9 removed.)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.routes import HTTPRoute
from schemathesis import Case

from ledger.api.app import create_app
from ledger.api.openapi import admitted_roles
from ledger.config import Settings
from ledger.core import roles
from ledger.db import import_statuses
from ledger.testing.checkout import POLICIES_DIR, ROOT
from ledger.testing.databases import run_admin, with_database
from ledger.testing.live import Served, run_aside, serving_api

DIRTY = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()

# Generated examples per operation, beyond the coverage cases the schema yields: about a
# minute for the whole schema on two cores (150 took 100 s; the suite as a whole must stay
# under ten minutes). Raise it locally with LEDGER_FUZZ_EXAMPLES for a longer hunt.
MAX_EXAMPLES = int(os.environ.get("LEDGER_FUZZ_EXAMPLES", "100"))
# Who calls an operation: the least privileged token among the roles its guards admit.
_BY_PRIVILEGE = [(roles.LAB_MANAGER, "manager"), (roles.AUDITOR, "auditor"), (roles.COMPLIANCE_OFFICER, "officer")]
# Real values for path parameters, by name: filled once the app is up (fuzz_app), read at
# generation time.
REAL: dict[str, list[str]] = {}
# Schemathesis puts credentials on some cases when it collects the tests, before any token
# exists: each case is given its token's name behind this prefix, swapped for the token itself
# when it is sent. A case that leaves out or spoils its credentials on purpose keeps what it has.
PLACEHOLDER = "token-of-"
# Checks left out, and why: a request the schema allows may still be refused for the state it
# meets (a tree size past the head, an item already decided), which no schema can say; and
# Litestar 2's automatic OPTIONS answer lists only some of a path's methods in Allow
# (litestar-org/litestar#4169, fixed in Litestar 3).
EXCLUDED_CHECKS = [schemathesis.checks.positive_data_acceptance, schemathesis.checks.allow_header_conformance]


def _token_names(app: Litestar) -> dict[tuple[str, str], str]:
    """The token (its name in ledger.testing.TOKENS) each operation is called with, by (method,
    path) as the schema spells them: the least privileged one its guards admit."""
    names: dict[tuple[str, str], str] = {}
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method, (handler, _) in route.route_handler_map.items():
                admitted = admitted_roles(handler)
                names[(str(method).upper(), route.path_format)] = next(
                    (name for role, name in _BY_PRIVILEGE if role in admitted), "admin"
                )
    return names


def _app_schema() -> tuple[dict[str, Any], dict[tuple[str, str], str]]:
    """The OpenAPI schema the app generates (no database is needed for that), and who calls what."""
    with tempfile.TemporaryDirectory() as home:
        app = create_app(Settings(home=Path(home), policies_dir=POLICIES_DIR), "postgresql://127.0.0.1/unused")
        document: dict[str, Any] = json.loads(json.dumps(app.openapi_schema.to_schema()))
        return document, _token_names(app)


APP_SCHEMA, TOKEN_NAMES = _app_schema()
# Schemathesis draws its multipart boundaries with `random`, which Hypothesis warns about: not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
schema = schemathesis.openapi.from_dict(APP_SCHEMA)


@schema.hook
def flatmap_case(context: schemathesis.HookContext, case: Case) -> st.SearchStrategy[Case]:
    """Now and then, in a case meant to be valid, real things in place of the generated path
    parameters (a case meant to be invalid keeps its invalid ones)."""
    names = list(case.path_parameters or {})
    meta = case.meta
    if not names or not all(REAL.get(n) for n in names) or meta is None or meta.generation.mode.is_negative:
        return st.just(case)

    def named(real: dict[str, str]) -> Case:
        case.path_parameters = {**(case.path_parameters or {}), **real}
        return case

    real = st.fixed_dictionaries({n: st.sampled_from(REAL[n]) for n in names}).map(named)
    return st.one_of(st.just(case), real)


@schema.hook
def filter_case(context: schemathesis.HookContext, case: Case) -> bool:
    """Leaves out a case meant to be invalid whose only fault vanishes on the wire: an empty
    list as a multipart field is sent as no part at all, which is a valid form."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative or not isinstance(case.body, dict):
        return True
    return not (case.media_type == "multipart/form-data" and any(v == [] for v in case.body.values()))


@schema.auth(refresh_interval=None)
class RoleToken:
    """Each operation's token: schemathesis applies it to every case but those that leave out
    or spoil the credentials on purpose."""

    def get(self, case: Case, context: schemathesis.AuthContext) -> str:
        return PLACEHOLDER + TOKEN_NAMES[(context.operation.method.upper(), context.operation.path)]

    def set(self, case: Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


def _wait(client: httpx.Client, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, Any] = client.get(f"/imports/{task_id}").json()
        if body["status"] in import_statuses.TERMINAL:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def _seed(served: Served) -> dict[str, list[str]]:
    """Real things for the path parameters to name, by parameter name."""
    admin = httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {served.tokens['admin']}"})
    manager = httpx.Client(base_url=served.base_url, headers={"Authorization": f"Bearer {served.tokens['manager']}"})
    with admin, manager:
        tasks = []
        for content, extra in ((CLEAN, {}), (DIRTY, {}), (DIRTY, {"dry_run": "true"})):
            response = manager.post("/imports", files={"file": ("m.csv", content, "text/csv")}, data=extra)
            assert response.status_code == 202, response.text
            tasks.append(_wait(manager, response.json()["task_id"]))
        quarantined = [
            f"{t['task_id']}:{row['row']}"
            for t in tasks
            for row in admin.get(f"/imports/{t['task_id']}/rows", params={"outcome": "quarantined"}).json()["items"]
        ]
        assets = admin.get("/assets").json()["items"]
        history = admin.get(f"/assets/{assets[0]['asset_id']}/history").json()
        # Tokens made to be revoked and rotated: never those the fuzzer calls with.
        expendable = [
            admin.post("/tokens", json={"role": "auditor", "label": f"fuzz {i}"}).json()["info"]["id"] for i in range(3)
        ]
    return {
        "task_id": [t["task_id"] for t in tasks],
        "item_id": quarantined,
        "asset_id": [a["asset_id"] for a in assets],
        "entry_id": [str(r["entry_id"]) for r in history["revisions"]],
        "token_id": expendable,
        "name": ["lab-inventory"],
    }


@pytest.fixture(scope="module")
def fuzz_app(pg_server: str, template_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"ledger_fuzz_{uuid.uuid4().hex[:10]}"
    run_aside(run_admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    url = with_database(pg_server, name)
    app_settings = Settings(
        database_url=url,
        home=tmp_path_factory.mktemp("fuzz"),
        policies_dir=POLICIES_DIR,
        import_processes=1,
        # The fuzzer sends bad tokens on purpose: throttling its address would turn every later
        # call into a 429 and test nothing more.
        auth_failures_per_minute=1_000_000,
    )
    try:
        with serving_api(app_settings, url) as served:
            REAL.update(_seed(served))
            yield served
    finally:
        REAL.clear()
        run_aside(run_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_fuzzed_schema_is_the_one_the_app_serves(fuzz_app: Served) -> None:
    served = httpx.get(f"{fuzz_app.base_url}/schema/openapi.json")
    assert served.status_code == 200
    assert served.json() == APP_SCHEMA


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # No shrinking: against a live server it would replay requests for minutes; the failure
    # as found, with its curl command, says enough.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: Case, fuzz_app: Served) -> None:
    sent, prefix = (case.headers or {}).get("Authorization", ""), f"Bearer {PLACEHOLDER}"
    token = fuzz_app.tokens.get(sent.removeprefix(prefix)) if sent.startswith(prefix) else None
    headers = {"Authorization": f"Bearer {token}"} if token is not None else None
    case.call_and_validate(base_url=fuzz_app.base_url, headers=headers, excluded_checks=EXCLUDED_CHECKS, timeout=20)


def test_every_import_still_accounts_for_every_row(fuzz_app: Served) -> None:
    """After the fuzzer has resubmitted, dismissed and transferred real quarantine items (the
    tests above run first), each real import still answers for every row."""
    admin = {"Authorization": f"Bearer {fuzz_app.tokens['admin']}"}
    for task_id in REAL["task_id"]:
        response = httpx.get(f"{fuzz_app.base_url}/imports/{task_id}/accounting", headers=admin)
        assert response.status_code == 200, response.text
        account = response.json()
        assert account["rows_total"] == account["committed"] + account["duplicate"] + account["quarantined"]
        decided = account["open"] + account["resolved"] + account["dismissed"]
        assert account["quarantined"] == decided, account
