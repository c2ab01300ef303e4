"""The layering contract: imports point down (core -> db / ingest -> services -> api, jobs -> cli).

The contracts live in pyproject.toml ([tool.importlinter]) so that `lint-imports` run by hand
says the same as the suite.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_package_has_a_layer() -> None:
    """A new package or top-level module cannot slip past the contract by being unlisted."""
    (layers,) = [c for c in _contracts() if c["type"] == "layers"]
    listed = {name.strip() for layer in layers["layers"] for name in str(layer).split("|")}  # type: ignore[attr-defined]
    present = {
        f"ledger.{path.stem}"
        for path in (ROOT / "ledger").iterdir()
        if (path.is_dir() and (path / "__init__.py").exists()) or (path.suffix == ".py" and path.stem != "__init__")
    }
    assert present <= listed, f"not in any layer of pyproject.toml: {sorted(present - listed)}"
