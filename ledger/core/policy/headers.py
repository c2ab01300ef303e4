"""Header cells to field names: BOM, whitespace, case and separators do not matter."""

from __future__ import annotations

import re

__all__ = ["normalise_header"]

_SEPARATORS = re.compile(r"[\s\-.]+")


def normalise_header(cell: str) -> str:
    """``"Asset ID"``, ``" asset-id "`` and ``"ASSET_ID"`` all give ``asset_id``."""
    return _SEPARATORS.sub("_", cell.replace("\ufeff", "").replace("\ufffe", "").strip().lower())
