"""The offline verifier from a fresh virtual environment holding only the core's dependencies
(pip install --no-deps of the project, plus msgspec and cryptography), on a proof the API served.

It needs a package index (or pip's cache) for msgspec and cryptography; set
LEDGER_SKIP_VENV_TEST=1 to skip it on a machine without either. CI runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from ledger.core.hashing import sha256
from ledger.core.note import Signer
from ledger.testing import Api

ROOT = Path(__file__).resolve().parents[2]
CLEAN = (ROOT / "examples" / "clean-manifest.csv").read_bytes()
# A key the server never signed with.
OTHER_SIGNER = Signer("ledger.test/vectors", sha256(b"another key: not a secret"))


def _project_copy(dest: Path) -> Path:
    """The files a build needs, so building leaves nothing behind in the working tree."""
    shutil.copytree(ROOT / "ledger", dest / "ledger", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    return dest


@pytest.mark.skipif(
    os.environ.get("LEDGER_SKIP_VENV_TEST") == "1", reason="LEDGER_SKIP_VENV_TEST=1 (no package index reachable)"
)
async def test_core_only_venv_verifies_a_proof_served_by_the_api(api: Api, tmp_path: Path) -> None:
    """pip install --no-deps of the project plus msgspec and cryptography: nothing else."""
    await api.run(CLEAN)
    keys = (await api.get("/audit/public-key", role="auditor")).json()
    history = (await api.get("/assets/CHEM-0043/history", role="auditor")).json()
    proof = await api.get(f"/audit/proofs/entries/{history['revisions'][-1]['entry_id']}", role="auditor")
    assert proof.status_code == 200
    (tmp_path / "proof.json").write_bytes(proof.content)

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    quiet = {**os.environ, "PIP_NO_INPUT": "1"}
    project = _project_copy(tmp_path / "project")
    subprocess.run([*pip, "--no-deps", str(project)], check=True, env=quiet, timeout=300, cwd=tmp_path)
    subprocess.run([*pip, "msgspec", "cryptography"], check=True, env=quiet, timeout=300, cwd=tmp_path)
    listed = subprocess.run([str(py), "-m", "pip", "list"], capture_output=True, text=True, check=True).stdout
    assert "sqlalchemy" not in listed.lower() and "litestar" not in listed.lower()

    ledger = env_dir / "bin" / "ledger"
    ok = subprocess.run(
        [str(ledger), "verify-proof", "proof.json", "--public-key", keys[0]["verifier_key"]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert "entry 2 of batch 1" in ok.stdout
    bad = subprocess.run(
        [str(ledger), "verify-proof", "proof.json", "--public-key", OTHER_SIGNER.verifier.encode()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert bad.returncode == 1 and "untrusted_key" in bad.stderr
