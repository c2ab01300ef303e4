"""Every offline verify-* command fails, saying why, when it cannot check a checkpoint's
signature; --no-signature-check checks the rest and says on stdout that signatures were not."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ledger.cli.main import main
from ledger.cli.offline import NOT_CHECKED
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

KEY = TEST_SIGNER.verifier.encode()
LEDGER = synth_ledger([7, 3], batch_rows=4)
SIZE = len(LEDGER)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("signatures")
    b = LEDGER[1]
    note = checkpoint_note(LEDGER, SIZE)
    proof = build_entry_proof(
        entry_id=None,
        index=2,
        record=b.records[2],
        batch_leaves=[leaf_hash(r) for r in b.records],
        header=b.header,
        tree_leaves=tree_leaves(LEDGER),
        checkpoint=note,
    )
    receipt_batch = LEDGER[2]
    receipt = build_receipt_proof(
        task_id=receipt_batch.task_id or "",
        receipt=receipt_batch.records[0],
        receipt_header=receipt_batch.header,
        batch_headers=[LEDGER[0].header, LEDGER[1].header],
        tree_leaves=tree_leaves(LEDGER),
        checkpoint=note,
    )
    paths = {name: d / name for name in ("proof", "receipt", "manifest", "old", "new", "forged", "cons", "bundle")}
    paths["proof"].write_bytes(msgspec.json.encode(proof))
    paths["receipt"].write_bytes(msgspec.json.encode(receipt))
    paths["manifest"].write_bytes(manifest_bytes(0, 7))
    paths["old"].write_text(checkpoint_note(LEDGER, 3))
    paths["new"].write_text(note)
    # The same checkpoint body, its signature replaced by one of a key nobody trusts.
    paths["forged"].write_text(checkpoint_note(LEDGER, SIZE, OTHER_SIGNER))
    paths["cons"].write_bytes(msgspec.json.encode(build_consistency_proof(tree_leaves(LEDGER), 3, None, None)))
    paths["bundle"].write_bytes(b"".join(bundle_lines(LEDGER, 0, SIZE, [3, SIZE])))
    return paths


def _commands(f: dict[str, Path]) -> dict[str, list[str]]:
    return {
        "verify-proof": ["verify-proof", str(f["proof"])],
        "verify-receipt": ["verify-receipt", str(f["receipt"]), str(f["manifest"])],
        "verify-consistency": ["verify-consistency", str(f["old"]), str(f["new"]), str(f["cons"])],
        "verify-bundle": ["verify-bundle", str(f["bundle"]), "--checkpoint", str(f["old"])],
    }


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refusing the arguments
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["verify-proof", "verify-receipt", "verify-consistency", "verify-bundle"])
def test_without_a_key_every_command_fails_saying_why(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = _run(capsys, *_commands(files)[command])
    assert code != 0
    assert "cannot check the checkpoint signatures" in err and "--no-signature-check" in err
    assert "consistent" not in out and "verified" not in out


@pytest.mark.parametrize("command", ["verify-proof", "verify-receipt", "verify-consistency", "verify-bundle"])
def test_no_signature_check_checks_the_rest_and_says_so_on_stdout(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = _run(capsys, *_commands(files)[command], "--no-signature-check")
    assert code == 0, err
    assert NOT_CHECKED in out


@pytest.mark.parametrize("command", ["verify-proof", "verify-receipt", "verify-consistency", "verify-bundle"])
def test_with_the_key_every_command_passes_without_the_warning(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    code, out, err = _run(capsys, *_commands(files)[command], "--public-key", KEY)
    assert code == 0, err
    assert NOT_CHECKED not in out


def test_a_key_and_no_signature_check_together_are_refused(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, *_commands(files)["verify-proof"], "--public-key", KEY, "--no-signature-check")
    assert code != 0 and "contradict" in err


def test_an_empty_key_file_cannot_check_anything(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "keys.txt"
    empty.write_text("\n")
    code, _, err = _run(capsys, *_commands(files)["verify-proof"], "--public-key", str(empty))
    assert code != 0 and "no verifier key" in err


def test_verify_consistency_without_a_key_refuses_a_replaced_signature(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The finding: without --public-key a checkpoint whose signature was replaced exited 0."""
    args = ["verify-consistency", str(files["old"]), str(files["forged"]), str(files["cons"])]
    code, out, err = _run(capsys, *args)
    assert code != 0 and "cannot check the checkpoint signatures" in err
    assert "consistent" not in out
    code, _, err = _run(capsys, *args, "--public-key", KEY)
    assert code == 1 and "untrusted_key" in err
    code, out, _ = _run(capsys, *args, "--no-signature-check")
    assert code == 0 and NOT_CHECKED in out
