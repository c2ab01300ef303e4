"""Checkpoints, proofs, receipts and export over HTTP, checked with the offline verifier; a
superuser's consistent rewrite of history is caught by an earlier checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ledger.core import records
from ledger.core.bundle import CompactRange, iter_lines, verify_bundle
from ledger.core.hashing import leaf_hash
from ledger.core.merkle import root
from ledger.core.note import Verifier
from ledger.core.outcomes import ACCEPTED, row_outcome
from ledger.core.proofs import (
    ConsistencyProof,
    EntryProof,
    ReceiptProof,
    read_checkpoint,
    tree_leaf,
    verify_consistency_proof,
    verify_entry_proof,
    verify_receipt_proof,
)
from ledger.db.stored_outcomes import IMPORT_OUTCOMES, accepted_leaf_sql, stored_outcome
from ledger.testing import Api, manifest

ROOT = Path(__file__).resolve().parents[2]
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()


def rows(prefix: str, n: int) -> bytes:
    return manifest(
        *[f"{prefix}-{i:04d},NIH-R01GM1,equipment,{i},CHM-204,2024-01-15,,,1.00,item {i}" for i in range(n)]
    )


@pytest.fixture
def batch_rows() -> int:
    return 3


async def _keys(api: Api) -> list[Verifier]:
    body = (await api.get("/audit/public-key", role="auditor")).json()
    assert body[0]["current"] is True
    return [Verifier.parse(k["verifier_key"]) for k in body]


async def _entry_id(api: Api, asset_id: str) -> int:
    history = (await api.get(f"/assets/{asset_id}/history", role="auditor")).json()
    entry_id: int = history["revisions"][-1]["entry_id"]
    return entry_id


async def test_every_commit_is_checkpointed_and_proofs_verify_offline(api: Api) -> None:
    first = await api.run(CLEAN)
    keys = await _keys(api)
    latest = (await api.get("/audit/checkpoints/latest", role="auditor")).json()
    assert latest["tree_size"] == 4  # 3 asset batches of 3 rows and the receipt
    old = read_checkpoint(latest["note"], keys)
    assert old.size == 4 and old.root.hex() == latest["root_hash"]

    proof = (await api.get(f"/audit/proofs/entries/{await _entry_id(api, 'CHEM-0043')}", role="auditor")).json()
    result = verify_entry_proof(msgspec.convert(proof, EntryProof), keys)
    assert (result.batch_seq, result.index) == (1, 2)

    receipt = (await api.get(f"/imports/{first['task_id']}/receipt", role="manager")).json()
    verified = verify_receipt_proof(msgspec.convert(receipt, ReceiptProof), keys, manifest=[CLEAN])
    assert verified.receipt.rows.total == first["rows_total"] and verified.batch_seq == 4

    await api.run(rows("NEW", 4))
    listed = (await api.get("/audit/checkpoints", role="auditor", params={"from": 0})).json()
    assert [c["tree_size"] for c in listed] == [4, 7]
    only = (await api.get("/audit/checkpoints", role="auditor", params={"from": 5, "to": 7})).json()
    assert [c["tree_size"] for c in only] == [7]
    no_checkpoint = await api.get("/audit/export", role="auditor", params={"to": 5})
    assert no_checkpoint.status_code == 422 and no_checkpoint.json()["code"] == "no_checkpoint"
    new_note = listed[-1]["note"]
    consistency = (await api.get("/audit/proofs/consistency", role="auditor", params={"from": 4, "to": 7})).json()
    assert consistency["old_checkpoint"] == latest["note"] and consistency["new_checkpoint"] == new_note
    verify_consistency_proof(latest["note"], new_note, msgspec.convert(consistency, ConsistencyProof), keys)

    export = await api.get("/audit/export", role="auditor")
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    report = verify_bundle(iter_lines([export.content]), keys, old_checkpoints=[old])
    assert (report.batches, report.records, report.checkpoints) == (7, 8 + 1 + 4 + 1, 2)
    partial = await api.get("/audit/export", role="auditor", params={"from": 4, "to": 7})
    assert verify_bundle(iter_lines([partial.content]), keys).batches == 3


async def test_checkpoint_on_demand_and_errors(api: Api) -> None:
    assert (await api.client.post("/audit/checkpoints", headers=api.auth("auditor"))).status_code == 403
    created = await api.client.post("/audit/checkpoints", headers=api.auth("admin"))
    assert created.status_code == 201 and created.json()["tree_size"] == 0
    again = await api.client.post("/audit/checkpoints", headers=api.auth("admin"))
    assert again.status_code == 200 and again.json()["id"] == created.json()["id"]  # nothing new to sign
    missing = await api.get("/audit/proofs/entries/999999", role="auditor")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    bad = await api.get("/audit/proofs/consistency", role="auditor", params={"from": 5, "to": 2})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_range"
    nope = await api.get("/imports/00000000-0000-4000-8000-000000000000/receipt", role="auditor")
    assert nope.status_code == 404
    dry = await api.run(CLEAN, dry_run="true")
    no_receipt = await api.get(f"/imports/{dry['task_id']}/receipt", role="manager")
    assert no_receipt.status_code == 404 and no_receipt.json()["code"] == "no_receipt"
    other_lab = await api.run(rows("BIO", 2), role="manager2")
    assert (await api.get(f"/imports/{other_lab['task_id']}/receipt", role="manager")).status_code == 404


async def rewrite_history(db: Any, asset_id: str, old: bytes, new: bytes, *, keep_checkpoints: bool = False) -> None:
    """What a superuser can do: switch the triggers off, change one entry and recompute every
    hash after it so the chain is consistent again (the tree leaves too), and drop the
    checkpoints; or keep them (the notes they cannot sign again) with their stored root and
    compact range recomputed over the rewritten tree."""
    await db.execute("SET session_replication_role = replica")
    entry = await db.fetchrow("SELECT id, record, leaf_hash FROM ledger_entries WHERE asset_id = $1", asset_id)
    record = bytes(entry["record"]).replace(old, new)
    assert record != bytes(entry["record"])
    await db.execute(
        "UPDATE ledger_entries SET record = $2, leaf_hash = $3 WHERE id = $1", entry["id"], record, leaf_hash(record)
    )
    await db.execute(
        "UPDATE import_rows SET record_hash = $2 WHERE record_hash = $1", bytes(entry["leaf_hash"]), leaf_hash(record)
    )
    prev = records.GENESIS_PREV
    hashes: dict[int, str] = {}
    for b in await db.fetch("SELECT * FROM ledger_batches ORDER BY seq"):
        seq = b["seq"]
        if b["kind"] == "receipt":
            e = await db.fetchrow("SELECT id, record FROM ledger_entries WHERE batch_seq = $1", seq)
            r = records.parse_receipt(bytes(e["record"]))
            outcomes = await db.fetch(IMPORT_OUTCOMES, b["import_id"])
            forged = records.receipt_record(
                task_id=r.task_id,
                lab=r.lab,
                manifest_sha256=r.manifest_sha256,
                policy_name=r.policy.name,
                policy_version=r.policy.version,
                policy_sha256=r.policy.sha256,
                rows_total=r.rows.total,
                rows_committed=r.rows.committed,
                rows_duplicate=r.rows.duplicate,
                rows_quarantined=r.rows.quarantined,
                outcomes_root=root([leaf_hash(stored_outcome(o)) for o in outcomes]).hex(),
                batches=[(x.seq, hashes[x.seq]) for x in r.batches],
            )
            await db.execute(
                "UPDATE ledger_entries SET record = $2, leaf_hash = $3 WHERE id = $1",
                e["id"],
                forged,
                leaf_hash(forged),
            )
        leaves = [
            bytes(r[0])
            for r in await db.fetch("SELECT leaf_hash FROM ledger_entries WHERE batch_seq = $1 ORDER BY idx", seq)
        ]
        batch_hash = root(leaves)
        hashes[seq] = batch_hash.hex()
        header = records.BatchHeader(
            seq=seq,
            kind=b["kind"],
            batch_hash=batch_hash.hex(),
            records=b["records"],
            manifest_sha256=b["manifest_sha256"],
            policy_sha256=b["policy_sha256"],
            committed_at=records.format_time(b["committed_at"]),
        )
        prev = records.chain_hash(prev, records.encode_header(header))
        await db.execute(
            "UPDATE ledger_batches SET batch_hash = $2, chain_hash = $3 WHERE seq = $1", seq, batch_hash, prev
        )
        await db.execute("UPDATE batch_tree SET leaf_hash = $2 WHERE seq = $1", seq, tree_leaf(header))
    await db.execute("UPDATE ledger_head SET chain_hash = $1", prev)
    if keep_checkpoints:
        leaves = [bytes(r[0]) for r in await db.fetch("SELECT leaf_hash FROM batch_tree ORDER BY seq")]
        for c in await db.fetch("SELECT id, tree_size FROM checkpoints"):
            tree = CompactRange()
            for leaf in leaves[: c["tree_size"]]:
                tree.append(leaf)
            await db.execute(
                "UPDATE checkpoints SET root_hash = $2, tree_state = $3 WHERE id = $1",
                c["id"],
                tree.root(),
                b"".join(tree.nodes),
            )
    else:
        await db.execute("DELETE FROM checkpoints")
    await db.execute("SET session_replication_role = DEFAULT")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


async def test_a_consistent_rewrite_is_caught_by_an_earlier_checkpoint(api: Api, db: Any, tmp_path: Path) -> None:
    await api.run(CLEAN)
    keys = (await api.get("/audit/public-key", role="auditor")).json()
    key = keys[0]["verifier_key"]
    old = (await api.get("/audit/checkpoints/latest", role="auditor")).json()
    (tmp_path / "old.checkpoint").write_text(old["note"])
    await api.run(rows("LATER", 2))

    await rewrite_history(db, "CHEM-0043", b'"quantity":4', b'"quantity":40')
    report = (await api.get("/audit/verify", role="auditor")).json()
    assert report["ok"] is True  # the chain alone cannot tell
    new = (await api.client.post("/audit/checkpoints", headers=api.auth("admin"))).json()
    assert new["tree_size"] == 6
    (tmp_path / "new.checkpoint").write_text(new["note"])
    proof = await api.get("/audit/proofs/consistency", role="auditor", params={"from": old["tree_size"]})
    (tmp_path / "proof.json").write_bytes(proof.content)

    result = _cli(
        "verify-consistency",
        str(tmp_path / "old.checkpoint"),
        str(tmp_path / "new.checkpoint"),
        str(tmp_path / "proof.json"),
        "--public-key",
        key,
    )
    assert result.returncode == 1, result.stdout
    assert "consistency failed at checkpoint 4 -> 6" in result.stderr

    (tmp_path / "bundle.jsonl").write_bytes((await api.get("/audit/export", role="auditor")).content)
    result = _cli(
        "verify-bundle",
        str(tmp_path / "bundle.jsonl"),
        "--public-key",
        key,
        "--checkpoint",
        str(tmp_path / "old.checkpoint"),
    )
    assert result.returncode == 1
    assert "consistency failed at checkpoint of size 4" in result.stderr
    # Without the earlier checkpoint the rewritten bundle is self-consistent: that is why
    # auditors keep checkpoints.
    assert _cli("verify-bundle", str(tmp_path / "bundle.jsonl"), "--public-key", key).returncode == 0


async def test_parallel_verification_reports_what_one_pass_reports(
    api: Api, db: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ledger.db import verification

    monkeypatch.setattr(verification, "PARALLEL_RECORDS_MIN", 1)
    for prefix in ("PA", "PB", "PC"):
        await api.run(rows(prefix, 4))  # 2 asset batches and a receipt each
    one = await verification.verify_ledger(db)
    split = await verification.verify_ledger(db, database_url=database_url, workers=3)
    assert one == split and split.ok and (split.batches_checked, split.records_checked) == (9, 15)
    await db.execute("SET session_replication_role = replica")
    await db.execute(
        "UPDATE ledger_entries SET record = convert_to(replace(convert_from(record, 'UTF8'), 'item 3', 'item 9'), "
        "'UTF8') WHERE asset_id = 'PC-0003'"
    )
    await db.execute("DELETE FROM ledger_entries WHERE asset_id = 'PA-0001'")
    await db.execute("SET session_replication_role = DEFAULT")
    one = await verification.verify_ledger(db)
    split = await verification.verify_ledger(db, database_url=database_url, workers=3)
    assert one == split and not split.ok
    assert split.first_failure is not None and split.first_failure.batch_seq == 1


async def test_a_rotated_key_keeps_old_checkpoints_verifiable(database_url: str, tmp_path: Path) -> None:
    from ledger.config import Settings
    from ledger.core.note import Signer
    from ledger.testing import running_api

    settings = Settings(database_url=database_url, home=tmp_path, policies_dir=ROOT / "policies", batch_rows_max=3)
    async with running_api(settings, database_url) as api:
        await api.run(CLEAN)
        old_key = Verifier.parse((await api.get("/audit/public-key", role="auditor")).json()[0]["verifier_key"])
        old_note = (await api.get("/audit/checkpoints/latest", role="auditor")).json()["note"]
    # Rotation: a new key file under the same name, picked up at the next start.
    key_file = tmp_path / "rotated.key"
    key_file.write_text(Signer.generate(old_key.name).encode())
    rotated = Settings(
        database_url=database_url, home=tmp_path, policies_dir=ROOT / "policies", signing_key_file=key_file
    )
    async with running_api(rotated, database_url) as api:
        await api.run(rows("ROT", 2))
        keys = (await api.get("/audit/public-key", role="auditor")).json()
        assert [k["current"] for k in keys] == [True, False] and keys[1]["verifier_key"] == old_key.encode()
        new_key = Verifier.parse(keys[0]["verifier_key"])
        new_note = (await api.get("/audit/checkpoints/latest", role="auditor")).json()["note"]
        export = (await api.get("/audit/export", role="auditor")).content
    assert read_checkpoint(old_note, [old_key]).size == 4
    assert read_checkpoint(new_note, [new_key]).size == 6
    assert verify_bundle(iter_lines([export]), [new_key]).checkpoints == 1  # the old one is untrusted, not wrong
    assert verify_bundle(iter_lines([export]), [old_key, new_key]).checkpoints == 2


async def test_the_commit_paths_sql_gives_the_row_outcome_bytes(db: Any) -> None:
    # The final transaction hashes accepted outcomes in PostgreSQL, with SQL made from
    # outcomes.ACCEPTED_TEMPLATE: it must give row_outcome's bytes exactly.
    query = f"SELECT {accepted_leaf_sql('$1::text', '$2::bytea', '$3::bigint')}"
    for outcome in ACCEPTED:
        for row in (0, 1, 12_345, 2**63 - 1):
            record_hash = leaf_hash(f"{outcome} {row}".encode())
            expected = leaf_hash(row_outcome(row=row, outcome=outcome, record_hash=record_hash.hex()))
            assert bytes(await db.fetchval(query, outcome, record_hash, row)) == expected
