"""The offline verifier commands run with the core alone: first with the server packages made
unimportable, then from a fresh virtual environment holding only the core's dependencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from ledger.core.hashing import leaf_hash
from ledger.core.proofs import build_consistency_proof, build_entry_proof, build_receipt_proof
from tests.vectors.audit_ledger import (
    OTHER_SIGNER,
    TEST_SIGNER,
    bundle_lines,
    checkpoint_note,
    manifest_bytes,
    synth_ledger,
    tree_leaves,
)

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = ["asyncpg", "litestar", "sqlalchemy", "alembic", "structlog", "pgqueuer", "uvicorn", "httpx"]
_BLOCKED = (
    "import sys\n"
    f"for name in {SERVER_PACKAGES!r}:\n"
    "    sys.modules[name] = None\n"
    "from ledger.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    f"leaked = [n for n in sys.modules if n.split('.')[0] in {SERVER_PACKAGES!r} and sys.modules[n] is not None]\n"
    "assert not leaked, leaked\n"
    "sys.exit(code)\n"
)
KEY = TEST_SIGNER.verifier.encode()
LEDGER = synth_ledger([7, 3], batch_rows=4)  # batches: 4, 3, receipt, 3, receipt


def _offline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKED, *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("offline")
    size = len(LEDGER)
    b = LEDGER[1]
    proof = build_entry_proof(
        entry_id=None,
        index=2,
        record=b.records[2],
        batch_leaves=[leaf_hash(r) for r in b.records],
        header=b.header,
        tree_leaves=tree_leaves(LEDGER),
        checkpoint=checkpoint_note(LEDGER, size),
    )
    receipt_batch = LEDGER[2]
    receipt = build_receipt_proof(
        task_id=receipt_batch.task_id or "",
        receipt=receipt_batch.records[0],
        receipt_header=receipt_batch.header,
        batch_headers=[LEDGER[0].header, LEDGER[1].header],
        tree_leaves=tree_leaves(LEDGER),
        checkpoint=checkpoint_note(LEDGER, size),
    )
    paths = {
        "proof": d / "proof.json",
        "receipt": d / "receipt.json",
        "manifest": d / "manifest.csv",
        "old": d / "old.checkpoint",
        "new": d / "new.checkpoint",
        "consistency": d / "consistency.json",
        "bundle": d / "bundle.jsonl",
        "key": d / "key.txt",
    }
    paths["proof"].write_bytes(msgspec.json.encode(proof))
    paths["receipt"].write_bytes(msgspec.json.encode(receipt))
    paths["manifest"].write_bytes(manifest_bytes(0, 7))
    paths["old"].write_text(checkpoint_note(LEDGER, 3))
    paths["new"].write_bytes(msgspec.json.encode({"note": checkpoint_note(LEDGER, size)}))  # as the API serves it
    paths["consistency"].write_bytes(msgspec.json.encode(build_consistency_proof(tree_leaves(LEDGER), 3, None, None)))
    paths["bundle"].write_bytes(b"".join(bundle_lines(LEDGER, 0, size, [3, size])))
    paths["key"].write_text(KEY + "\n")
    return paths


def test_roles_spelled_out_in_the_cli_match_the_schema() -> None:
    from ledger.cli.main import ROLES
    from ledger.db.tables import ROLES as TABLE_ROLES

    assert ROLES == TABLE_ROLES


def test_offline_commands_work_without_the_server_packages(files: dict[str, Path]) -> None:
    ok = _offline("verify-proof", str(files["proof"]), "--public-key", KEY)
    assert ok.returncode == 0, ok.stderr
    assert "entry 2 of batch 2" in ok.stdout
    ok = _offline("verify-receipt", str(files["receipt"]), str(files["manifest"]), "--public-key", str(files["key"]))
    assert ok.returncode == 0, ok.stderr
    assert "rows: 8 total = 7 committed + 0 duplicate + 1 quarantined" in ok.stdout
    ok = _offline(
        "verify-consistency", str(files["old"]), str(files["new"]), str(files["consistency"]), "--public-key", KEY
    )
    assert ok.returncode == 0, ok.stderr
    assert "extends the tree of size 3" in ok.stdout
    ok = _offline("verify-bundle", str(files["bundle"]), "--public-key", KEY, "--checkpoint", str(files["old"]))
    assert ok.returncode == 0, ok.stderr
    assert "12 records, 12 row outcomes" in ok.stdout


def test_offline_commands_exit_1_naming_the_failed_check(files: dict[str, Path], tmp_path: Path) -> None:
    other = OTHER_SIGNER.verifier.encode()
    bad = _offline("verify-proof", str(files["proof"]), "--public-key", other)
    assert bad.returncode == 1 and "untrusted_key failed at checkpoint" in bad.stderr
    tampered = tmp_path / "manifest.csv"
    tampered.write_bytes(files["manifest"].read_bytes() + b"extra row\n")
    bad = _offline("verify-receipt", str(files["receipt"]), str(tampered), "--public-key", KEY)
    assert bad.returncode == 1 and "manifest_sha256 failed at task" in bad.stderr
    bad = _offline(
        "verify-consistency", str(files["new"]), str(files["old"]), str(files["consistency"]), "--public-key", KEY
    )
    assert bad.returncode == 1 and "proof_sizes failed" in bad.stderr
    lines = files["bundle"].read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:5] + lines[6:]))
    bad = _offline("verify-bundle", str(cut), "--public-key", KEY)
    assert bad.returncode == 1 and "failed at batch 1, entry" in bad.stderr
    proof = msgspec.json.decode(files["proof"].read_bytes())
    proof["index"] += 1
    off_by_one = tmp_path / "proof.json"
    off_by_one.write_bytes(msgspec.json.encode(proof))
    bad = _offline("verify-proof", str(off_by_one), "--public-key", KEY)
    assert bad.returncode == 1 and "record_in_batch failed at batch 2, entry 3" in bad.stderr
    missing = _offline("verify-proof", str(tmp_path / "nope.json"), "--public-key", KEY)
    assert missing.returncode == 1 and "cannot read proof" in missing.stderr
