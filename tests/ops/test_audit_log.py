"""The audit log for the SIEM (ledger.audit_log, docs/audit-log.md): every event type driven
through the real API, the pages and the CLI, each line held to the documented schema, its ledger
position held to the ledger's own answers, and no secret in any line."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from ledger import audit_log
from ledger.api.app import create_app
from ledger.audit_log import ACTIONS, ECS_VERSION, SCHEMA_VERSION, AuditEvent
from ledger.config import Settings
from ledger.core.hashing import leaf_hash
from ledger.core.note import Signer
from ledger.services.quarantine import decisions as quarantine_service
from ledger.testing import Api, manifest
from ledger.testing.checkout import ROOT
from ledger.testing.web import WebUser, sign_in

DOC = ROOT / "docs" / "audit-log.md"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
# Events that name who acted whenever a request (provider api or web) caused them.
ACTED = {name for name, spec in ACTIONS.items() if spec.actor}


def row(asset: str, quantity: str = "1", grant: str = "NIH-R01GM1") -> str:
    return f"{asset},{grant},equipment,{quantity},CHM-204,2024-01-15,,,10.00,Audit"


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    return {"audit_log": str(tmp_path / "audit" / "ledger-audit.jsonl")}


@pytest.fixture(autouse=True)
def audit_dir(tmp_path: Path) -> None:
    (tmp_path / "audit").mkdir()


class AuditFile:
    """The lines written so far, each decoded against the schema."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        return self.path.read_text() if self.path.exists() else ""

    def events(self) -> list[AuditEvent]:
        return [checked(line) for line in self.text().splitlines()]

    def of(self, action: str, **ledger: Any) -> list[AuditEvent]:
        return [
            e
            for e in self.events()
            if e.event.action == action and all(getattr(e.ledger, k) == v for k, v in ledger.items())
        ]

    async def one(self, action: str, **ledger: Any) -> AuditEvent:
        """The one event of ``action`` (with those ledger fields), once it is written: an
        import's lines follow its commit in the worker, a poll may see the commit first."""
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            found = self.of(action, **ledger)
            if found:
                assert len(found) == 1, found
                return found[0]
            assert asyncio.get_running_loop().time() < deadline, f"no {action} {ledger} in\n{self.text()}"
            await asyncio.sleep(0.02)


def checked(line: str) -> AuditEvent:
    """One line held to the schema: every field documented (unknown ones are refused), the
    action's categorisation and the ledger fields it always carries."""
    event = msgspec.json.decode(line, type=AuditEvent)
    spec = ACTIONS[event.event.action]
    assert (event.event.category, event.event.type) == (list(spec.category), list(spec.type))
    assert (event.event.kind, event.ecs.version, event.service.name) == ("event", ECS_VERSION, "ledger")
    assert event.ledger.schema_version == SCHEMA_VERSION and TIMESTAMP.fullmatch(event.timestamp)
    assert event.event.outcome in ("success", "failure", "unknown") and len(event.event.id) == 32
    missing = [name for name in spec.ledger if getattr(event.ledger, name) is None]
    assert not missing, f"{event.event.action} without ledger.{missing}: {line}"
    if event.event.provider in ("api", "web"):
        assert event.source is not None and event.source.address and event.http is not None
        if event.event.action in ACTED:
            assert event.user is not None and event.user.id and event.user.roles, line
    return event


def signer_file(path: Path, name: str) -> Path:
    path.write_text(Signer.generate(name).encode() + "\n")
    return path


async def post(api: Api, path: str, body: dict[str, Any], role: str = "officer") -> Any:
    return await api.client.post(path, json=body, headers=api.auth(role))


async def test_every_event_is_written_with_its_schema_and_ledger_position(
    api: Api, db: Any, tmp_path: Path, settings_overrides: dict[str, Any], database_url: str, monkeypatch: Any
) -> None:
    audit = AuditFile(Path(settings_overrides["audit_log"]))
    secrets = set(api.tokens.values())
    key = await audit.one(audit_log.SIGNING_KEY_REGISTERED)
    assert key.event.provider == "server" and key.user is None

    # Imports: bio-lab holds XFER-1; chem-lab holds AU-0001, then sends rows to decide on.
    await api.run(manifest(row("XFER-1")), role="manager2")
    await api.run(manifest(row("AU-0001")))
    status = await api.run(
        manifest(row("AU-0001", "1.5"), row("XFER-1"), *(row(f"N-000{i}", "-3") for i in range(1, 5)))
    )
    task = status["task_id"]
    assert status["rows_quarantined"] == 6
    submitted = await audit.one(audit_log.IMPORT_SUBMITTED, task_id=task)
    assert (submitted.ledger.lab, submitted.ledger.dry_run, submitted.event.provider) == ("chem-lab", False, "api")
    assert submitted.user is not None and submitted.user.roles == ["lab_manager"]
    done = await audit.one(audit_log.IMPORT_DONE, task_id=task)
    assert (done.event.provider, done.user, done.ledger.rows_quarantined) == ("worker", None, 6)
    receipt = (await api.get(f"/imports/{task}/receipt")).json()
    header = receipt["receipt_batch"]["header"]
    assert (done.ledger.batch_seq, done.ledger.batch_hash) == (header["seq"], header["batch_hash"])
    assert done.ledger.record_hash == leaf_hash(receipt["receipt"].encode()).hex()
    proof = (await api.get(f"/audit/proofs/entries/{done.ledger.entry_id}", role="auditor")).json()
    assert (proof["leaf_hash"], proof["index"]) == (done.ledger.record_hash, done.ledger.entry_index)
    signed = await audit.one(audit_log.CHECKPOINT_SIGNED, tree_size=done.ledger.batch_seq)
    stored = (await api.get("/audit/checkpoints", role="auditor", params={"from": header["seq"]})).json()[0]
    assert (signed.ledger.checkpoint_id, signed.ledger.root_hash) == (stored["id"], stored["root_hash"])

    dry = await api.run(manifest(row("DRY-1")), dry_run="true")
    dry_done = await audit.one(audit_log.IMPORT_DONE, task_id=dry["task_id"])
    assert dry_done.ledger.dry_run is True and dry_done.ledger.batch_seq is None
    failed = await api.run(b"colour,shape\nred,round\n")
    assert failed["status"] == "failed"
    failure = await audit.one(audit_log.IMPORT_FAILED, task_id=failed["task_id"])
    assert failure.error is not None and failure.error.code == failed["error"]["code"]
    assert failure.event.outcome == "failure"

    # Officers' decisions: each at its review entry, as the API answered and the batch lists it.
    async def decided(action: str, item: str, answer: dict[str, Any], outcome: str = "success") -> None:
        event = await audit.one(action, item_id=item)
        assert (event.event.outcome, event.ledger.item_status, event.ledger.lab) == (
            outcome,
            answer["status"],
            "chem-lab",
        )
        assert (event.ledger.batch_seq, event.ledger.entry_index) == (answer["entry"]["seq"], answer["entry"]["idx"])
        assert event.ledger.correction_hash == answer.get("record_hash")
        batch = (await api.get(f"/audit/batches/{event.ledger.batch_seq}", role="auditor")).json()
        assert batch["header"]["batch_hash"] == event.ledger.batch_hash
        assert batch["entries"][event.ledger.entry_index]["leaf_hash"] == event.ledger.record_hash
        assert event.user is not None and event.user.roles == ["compliance_officer"]

    item = f"{task}:3"
    answer = (await post(api, f"/quarantine/{item}/resubmit", {"values": {"quantity": "3"}})).json()
    await decided(audit_log.QUARANTINE_RESUBMIT, item, answer)
    item = f"{task}:2"
    answer = (await post(api, f"/quarantine/{item}/transfer", {"note": "moved", "values": {}})).json()
    await decided(audit_log.QUARANTINE_TRANSFER, item, answer)
    item = f"{task}:4"
    answer = (await post(api, f"/quarantine/{item}/dismiss", {"reason": "gone"})).json()
    await decided(audit_log.QUARANTINE_DISMISS, item, answer)
    # A correction that fails transiently is recorded, and said so; the requeue then commits it.
    item = f"{task}:1"
    monkeypatch.setattr(quarantine_service, "CORRECTION_LOCK_TIMEOUT_MS", 200)
    tx = db.transaction()
    await tx.start()
    await db.execute("SELECT 1 FROM assets WHERE asset_id = 'AU-0001' FOR UPDATE")
    try:
        response = await post(api, f"/quarantine/{item}/resubmit", {"values": {"quantity": "2"}})
    finally:
        await tx.rollback()
    assert response.status_code == 503
    answer = response.json()["result"]
    await decided(audit_log.QUARANTINE_RESUBMIT, item, answer, "failure")
    assert (await audit.one(audit_log.QUARANTINE_RESUBMIT, item_id=item)).event.reason == "transient_failure"
    answer = (await post(api, "/quarantine/bulk", {"action": "requeue", "ids": [item]})).json()["items"][0]
    await decided(audit_log.QUARANTINE_REQUEUE, item, answer)

    # Tokens: the target is the token, the actor the admin; no secret is written.
    made = (await post(api, "/tokens", {"role": "auditor", "label": "siem test"}, role="admin")).json()
    rotated = (await post(api, f"/tokens/{made['info']['id']}/rotate", {}, role="admin")).json()
    revoked = await api.client.delete(f"/tokens/{rotated['info']['id']}", headers=api.auth("admin"))
    assert revoked.status_code == 200
    secrets |= {made["token"], rotated["token"]}
    created = await audit.one(audit_log.TOKEN_CREATED)
    assert created.user is not None and created.user.roles == ["admin"] and created.user.target is not None
    assert (created.user.target.id, created.user.target.name) == (made["info"]["id"], "siem test")
    rotation = await audit.one(audit_log.TOKEN_ROTATED)
    assert rotation.user is not None and rotation.user.target is not None
    assert (rotation.user.target.id, rotation.ledger.replaced_token_id) == (rotated["info"]["id"], made["info"]["id"])
    gone = await audit.one(audit_log.TOKEN_REVOKED)
    assert gone.user is not None and gone.user.target is not None and gone.user.target.id == rotated["info"]["id"]

    # Authentication: a bad bearer token, the sign-in page, a session and its CSRF token.
    bad = await api.client.get("/imports", headers={"Authorization": "Bearer ldg_not-a-token"})
    assert bad.status_code == 401
    assert (await audit.one(audit_log.AUTHENTICATION_FAILED)).error == audit_log.ErrorFields(code="unauthorized")
    async with await sign_in(api.client, api.tokens["officer"]) as user:
        secrets |= {user.csrf, *(c for c in user.cookies.values())}
        refused = await user.request("POST", "/imports", files={"file": ("m.csv", b"x", "text/csv")})
        assert refused.status_code == 403
        denied_csrf = (await audit.one(audit_log.ACCESS_DENIED)).error
        assert denied_csrf is not None and denied_csrf.code == "csrf_failed"
        await user.post("/ui/sign-out")
    visitor = WebUser(api.client)
    await visitor.get("/ui/sign-in")
    assert (await visitor.post("/ui/sign-in", {"token": "ldg_wrong"})).status_code == 401
    wrong = await audit.one(audit_log.SIGN_IN_FAILED)
    assert (wrong.event.provider, wrong.user, wrong.ledger.route) == ("web", None, "/ui/sign-in")
    signed_in, signed_out = await audit.one(audit_log.SIGNED_IN), await audit.one(audit_log.SIGNED_OUT)
    assert signed_in.user == signed_out.user and signed_in.user is not None
    assert signed_in.user.id == await token_id(api, "compliance_officer")

    # Refusals: a role, and another lab's import (answered 404, written as what it is).
    assert (await api.get("/tokens", role="manager")).status_code == 403
    assert (await api.get(f"/imports/{task}", role="manager2")).status_code == 404
    refusals = audit.of(audit_log.ACCESS_DENIED)
    by_code = {e.error.code: e for e in refusals if e.error is not None}
    assert set(by_code) == {"csrf_failed", "forbidden", "other_lab"}
    assert by_code["forbidden"].ledger.route == "/tokens" and by_code["forbidden"].user is not None
    assert by_code["forbidden"].user.id == await token_id(api, "lab_manager", "chem-lab")

    # Verification: its result and counts; after tampering, the first failing batch.
    report = (await api.get("/audit/verify", role="auditor")).json()
    ran = await audit.one(audit_log.VERIFICATION_RUN)
    assert (ran.event.outcome, ran.ledger.batches_checked) == ("success", report["batches_checked"])
    # The latest checkpoint's stored tree changed behind the service's back: the next commit's
    # checkpoint is refused, and said so; the commit itself stands.
    head_before = (await api.get("/audit/head", role="auditor")).json()["seq"]
    await db.execute("SET session_replication_role = replica")
    await db.execute(
        "UPDATE checkpoints SET tree_state = sha256(tree_state) WHERE id = (SELECT max(id) FROM checkpoints)"
    )
    await db.execute(
        "UPDATE ledger_entries SET record = record || '\\x20'::bytea WHERE batch_seq = $1 AND idx = 0",
        done.ledger.batch_seq,
    )
    await db.execute("SET session_replication_role = DEFAULT")
    bulk = {"action": "dismiss", "ids": [f"{task}:5", f"{task}:6"], "reason": "bulk"}
    results = (await post(api, "/quarantine/bulk", bulk)).json()["items"]
    assert [r["result"] for r in results] == ["dismissed", "dismissed"]
    refused_cp = await audit.one(audit_log.CHECKPOINT_REFUSED)
    assert refused_cp.event.outcome == "failure" and refused_cp.error is not None
    assert refused_cp.ledger.tree_size == head_before + 1
    for result in results:
        await decided(audit_log.QUARANTINE_BULK_DISMISS, result["id"], result)
    report = (await api.get("/audit/verify", role="auditor")).json()
    tampered = audit.of(audit_log.VERIFICATION_RUN)[-1]
    assert report["ok"] is False and tampered.event.outcome == "failure" and tampered.error is not None
    first = report["first_failure"]
    assert (tampered.ledger.batch_seq, tampered.ledger.entry_index) == (first["batch_seq"], first["entry"])
    assert tampered.error.code == first["reason"]

    # A new signing key at start is a rotation.
    rotated_key = signer_file(tmp_path / "new.key", "rotated.example/key")
    settings = Settings(
        database_url=database_url,
        home=tmp_path,
        policies_dir=ROOT / "policies",
        signing_key_file=rotated_key,
        audit_log=settings_overrides["audit_log"],
    )
    async with AsyncTestClient(app=create_app(settings, database_url)):
        pass
    new_key = await audit.one(audit_log.SIGNING_KEY_ROTATED)
    assert new_key.ledger.key_name == "rotated.example/key"

    text = audit.text()
    assert not [s for s in secrets if s and s in text]
    # Cancelling and connectors have tests of their own, below.
    assert {e.event.action for e in audit.events()} == set(ACTIONS) - {
        audit_log.IMPORT_CANCELLED,
        audit_log.CONNECTOR_REGISTERED,
        audit_log.CONNECTOR_SYNC_ENDED,
    }


async def test_a_connector_registered_and_its_sync_are_written(api: Api, settings_overrides: dict[str, Any]) -> None:
    """A new upstream source is configuration a SIEM watches; each sync's end says how it went
    and which import it became."""
    from ledger.testing.upstream import Upstream, inventory_records, serving_upstream
    from tests.connectors.test_worker_sync import DEFINITION

    audit = AuditFile(Path(settings_overrides["audit_log"]))
    with serving_upstream(Upstream(inventory_records(3))) as upstream:
        registered = await post(api, "/connectors", {"definition": DEFINITION.format(url=upstream.url)}, "manager")
        assert registered.status_code == 201, registered.text
        line = await audit.one(audit_log.CONNECTOR_REGISTERED)
        assert (line.ledger.connector, line.ledger.lab) == ("chem-wms", "chem-lab")
        assert line.user is not None and line.user.roles == ["lab_manager"]
        assert (await api.client.post("/connectors/chem-wms/syncs", headers=api.auth("officer"))).status_code == 202
        ended = await audit.one(audit_log.CONNECTOR_SYNC_ENDED)
    sync = (await api.get("/connectors/chem-wms/syncs")).json()[0]
    assert (ended.ledger.sync_id, ended.ledger.sync_status, ended.ledger.records) == (sync["sync_id"], "ok", 3)
    assert ended.ledger.task_id == sync["task_id"] and ended.event.outcome == "success"
    assert ended.event.provider == "worker"


async def token_id(api: Api, role: str, *labs: str) -> str:
    """The id of the test app's one token of ``role`` for exactly ``labs`` (ledger.testing.TOKENS)."""
    listed = (await api.get("/tokens", role="admin")).json()
    (found,) = [t["id"] for t in listed if t["role"] == role and t["labs"] == list(labs) and t["label"] is None]
    return str(found)


@pytest.mark.parametrize("inline_worker", [False])
async def test_a_cancelled_import_is_written_after_the_cancel(api: Api, settings_overrides: dict[str, Any]) -> None:
    audit = AuditFile(Path(settings_overrides["audit_log"]))
    task = (await api.submit(manifest(row("C-1")))).json()["task_id"]
    assert (await api.client.delete(f"/imports/{task}", headers=api.auth("manager"))).status_code == 200
    cancelled = await audit.one(audit_log.IMPORT_CANCELLED, task_id=task)
    assert cancelled.ledger.lab == "chem-lab" and cancelled.user is not None
    manager = await token_id(api, "lab_manager", "chem-lab")
    assert (cancelled.user.id, cancelled.user.roles) == (manager, ["lab_manager"])


def test_a_command_writes_its_line_to_stderr_and_keeps_stdout_for_its_answer(database_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    env |= {"LEDGER_DATABASE_URL": database_url, "LEDGER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "token", "create", "--role", "auditor", "--label", "cli"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("ldg_") and "\n" not in token  # stdout: the answer alone
    lines = [checked(line) for line in done.stderr.splitlines() if '"ecs"' in line]
    (created,) = lines
    assert (created.event.action, created.event.provider) == (audit_log.TOKEN_CREATED, "cli")
    assert created.user is not None and created.user.target is not None and created.user.target.name == "cli"
    assert created.user.id is None  # a command acts as whoever runs it, not as a token
    assert token not in done.stderr


# ---------------------------------------------------------------- the documentation


def _dotted(kind: Any, prefix: str = "") -> Iterator[str]:
    """Every field of the schema, as docs/audit-log.md names it (``ledger.batch_seq``)."""
    for field in msgspec.structs.fields(kind):
        name = prefix + field.encode_name
        inner = [a for a in typing.get_args(field.type) if a is not type(None)] or [field.type]
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, msgspec.Struct)]
        if nested:
            yield from _dotted(nested[0], name + ".")
        else:
            yield name


def _table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` in the doc, cells stripped of backticks."""
    text = DOC.read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in rows]


def test_the_doc_lists_exactly_the_actions_the_code_can_emit() -> None:
    listed = {r[0]: r for r in _table("Actions")}
    assert set(listed) == set(ACTIONS)
    for name, spec in ACTIONS.items():
        row_ = listed[name]
        assert (row_[1], row_[2]) == (", ".join(spec.category), ", ".join(spec.type)), name
        assert row_[3] == (", ".join(spec.ledger) or "-"), name
        assert row_[4] == ("yes" if spec.actor else "-"), name


def test_the_doc_lists_exactly_the_fields_of_the_schema() -> None:
    assert [r[0] for r in _table("Fields")] == list(_dotted(AuditEvent))


def test_the_doc_has_one_valid_example_per_action() -> None:
    section = DOC.read_text().split("\n## Examples\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("{")]
    examples = [checked(line) for line in lines]
    assert sorted(e.event.action for e in examples) == sorted(ACTIONS)


def test_a_rotated_file_is_reopened_and_lines_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit_log.configured(str(path), provider="cli"):
        audit_log.emit(audit_log.event(audit_log.SIGNED_OUT))
        path.rename(tmp_path / "audit.jsonl.1")  # logrotate's rename, then its create
        audit_log.emit(audit_log.event(audit_log.SIGNED_OUT))
    assert len((tmp_path / "audit.jsonl.1").read_text().splitlines()) == 1
    assert [checked(line).event.action for line in path.read_text().splitlines()] == [audit_log.SIGNED_OUT]
    assert oct(path.stat().st_mode & 0o777) == oct(audit_log.FILE_MODE & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_nothing_is_written_for_a_transaction_that_rolled_back(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with audit_log.configured(str(path), provider="cli"):
        with pytest.raises(RuntimeError), audit_log.deferred():
            audit_log.after_commit(audit_log.event(audit_log.SIGNED_OUT))
            raise RuntimeError("rolled back")
        with audit_log.deferred():
            audit_log.after_commit(audit_log.event(audit_log.SIGNED_IN))
            assert path.read_text() == ""  # held until the block ends
    assert [checked(line).event.action for line in path.read_text().splitlines()] == [audit_log.SIGNED_IN]


def test_an_active_span_names_its_trace() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    # A provider of its own, not the global one: the current span is the context's either way.
    with TracerProvider().get_tracer("audit-test").start_as_current_span("request") as span:
        inside = audit_log.event(audit_log.SIGNED_OUT)
    assert inside.trace == audit_log.TraceFields(id=f"{span.get_span_context().trace_id:032x}")
    assert audit_log.event(audit_log.SIGNED_OUT).trace is None
