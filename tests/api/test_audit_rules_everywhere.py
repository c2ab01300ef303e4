"""Issue 19's acceptance: the bundle verifier applies every §6.1 rule, naming the batch and entry
as GET /audit/verify would, even to a bundle relinked and re-signed with the server's own key;
and a consistent rewrite of the database, tree state included, fails the checkpoint comparison
of GET /audit/verify and gets no checkpoint signed over it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from ledger.core.bundle import CompactRange, iter_lines
from ledger.core.note import Signer, Verifier
from ledger.core.proofs import read_checkpoint
from ledger.testing import Api
from tests.api.test_proofs import CLEAN, rewrite_history, rows
from tests.api.test_quarantine import DIRTY, iid, post
from tests.vectors.audit_ledger import _edit_record, relink_bundle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def batch_rows() -> int:
    return 3


def _verify_bundle_cli(path: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify-bundle", str(path), "--public-key", key],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


async def test_verify_bundle_applies_the_review_rules_to_a_re_signed_bundle(api: Api, tmp_path: Path) -> None:
    task = (await api.run(DIRTY))["task_id"]
    fixed = await post(api, f"/quarantine/{iid(task, 5)}/resubmit", {"values": {"quantity": "2"}, "note": "typo"})
    assert fixed.status_code == 200, fixed.text
    review_seq = fixed.json()["entry"]["seq"]  # the correction is in the batch before it
    dismissed = await post(api, f"/quarantine/{iid(task, 6)}/dismiss", {"reason": "not our gadget"})
    assert dismissed.status_code == 200, dismissed.text
    dismissal = dismissed.json()["entry"]
    key = (await api.get("/audit/public-key", role="auditor")).json()[0]["verifier_key"]
    lines = list(iter_lines([(await api.get("/audit/export", role="auditor")).content]))
    # The server's own key, as an operator holding it (or a buggy server) would use it.
    signer = Signer.parse((tmp_path / "signing.key").read_text(encoding="utf-8"))

    genuine = tmp_path / "genuine.jsonl"
    genuine.write_bytes(b"".join(line + b"\n" for line in relink_bundle(lines, signer)))
    assert _verify_bundle_cli(genuine, key).returncode == 0  # relinking alone changes nothing

    def quantity_20(record: dict[str, Any]) -> None:
        record["data"]["quantity"] = 20

    def empty_note(record: dict[str, Any]) -> None:
        record["note"] = ""

    cases = [
        (_edit_record(lines, review_seq - 1, 0, quantity_20), "review_correction_mismatch", review_seq, 0),
        (_edit_record(lines, dismissal["seq"], dismissal["idx"], empty_note), "review_malformed", *dismissal.values()),
    ]
    for n, (tampered, check, seq, entry) in enumerate(cases):
        path = tmp_path / f"tampered-{n}.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in relink_bundle(tampered, signer)))
        result = _verify_bundle_cli(path, key)
        assert result.returncode == 1, result.stdout
        assert f"{check} failed at batch {seq}, entry {entry}:" in result.stderr, result.stderr


async def _checkpoints(db: Any) -> list[Any]:
    return list(await db.fetch("SELECT id, tree_size, root_hash FROM checkpoints ORDER BY id"))


async def test_a_consistent_rewrite_fails_the_checkpoint_comparison_and_is_not_signed(api: Api, db: Any) -> None:
    await api.run(CLEAN)  # batches 1-4, checkpoint of size 4
    await api.run(rows("LATER", 2))  # batches 5-6, checkpoint of size 6
    assert (await api.get("/audit/verify", role="auditor")).json()["ok"] is True
    keys = [Verifier.parse(k["verifier_key"]) for k in (await api.get("/audit/public-key", role="auditor")).json()]
    signed = await _checkpoints(db)
    assert [c["tree_size"] for c in signed] == [4, 6]

    await rewrite_history(db, "CHEM-0043", b'"quantity":4', b'"quantity":40', keep_checkpoints=True)
    signed = await _checkpoints(db)  # their stored roots are the forger's now; the notes are not
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report["ok"] is False
    failure = report["first_failure"]
    assert (failure["reason"], failure["batch_seq"], failure["entry"]) == ("checkpoint_mismatch", 4, None)
    assert "batches 1..4 are not the ones it signed" in failure["detail"]

    with capture_logs() as logs:
        later = await api.run(rows("AFTER", 2))  # the ledger keeps recording...
    assert later["status"] == "done" and later["rows_committed"] == 2
    assert await _checkpoints(db) == signed  # ...but signs nothing over the forged tree
    refused = [e for e in logs if e["event"] == "checkpoint_refused"]
    assert refused and refused[0]["log_level"] == "error" and refused[0]["check"] == "tree_state_mismatch"

    on_demand = await api.client.post("/audit/checkpoints", headers=api.auth("admin"))
    assert on_demand.status_code == 500 and on_demand.json()["code"] == "checkpoint_refused"
    assert await _checkpoints(db) == signed
    # What the service still serves is the tree it signed, not the forged one.
    forged = CompactRange()
    for leaf in await db.fetch("SELECT leaf_hash FROM batch_tree WHERE seq <= 6 ORDER BY seq"):
        forged.append(bytes(leaf[0]))
    latest = read_checkpoint((await api.get("/audit/checkpoints/latest", role="auditor")).json()["note"], keys)
    assert latest.size == 6 and latest.root != forged.root()


async def test_batch_listing_gives_entry_ids_and_types(api: Api) -> None:
    # §13: how to find any entry's id and type from the (batch, entry) an artefact names.
    task = (await api.run(DIRTY))["task_id"]
    receipt = (await api.get(f"/imports/{task}/receipt", role="auditor")).json()
    seq = receipt["receipt_batch"]["header"]["seq"]
    listing = (await api.get(f"/audit/batches/{seq}", role="auditor")).json()
    assert listing["header"] == receipt["receipt_batch"]["header"]
    (entry,) = listing["entries"]
    assert (entry["index"], entry["type"]) == (0, "receipt")
    proof = (await api.get(f"/audit/proofs/entries/{entry['entry_id']}", role="auditor")).json()
    assert proof["record"] == receipt["receipt"]
    assets = (await api.get("/audit/batches/1", role="auditor")).json()
    assert {e["type"] for e in assets["entries"]} == {"asset"}
    assert [e["index"] for e in assets["entries"]] == list(range(assets["header"]["records"]))
    missing = await api.get("/audit/batches/999", role="auditor")
    assert missing.status_code == 404
    assert msgspec.json.decode(missing.content)["code"] == "not_found"
