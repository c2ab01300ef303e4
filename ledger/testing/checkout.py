"""Where the source checkout is, for tests that read its policies, examples or pyproject.toml.

ledger.testing runs from a checkout (an editable install), never from an installed wheel.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["POLICIES_DIR", "ROOT"]

# The checkout: the directory holding ledger/, policies/, examples/ and pyproject.toml.
ROOT: Path = Path(__file__).resolve().parents[2]
# The policies the service ships (lab-inventory and the others).
POLICIES_DIR: Path = ROOT / "policies"
