"""Text the pages' forms carry to the ledger (corrected cells, notes, dismissal reasons) holds no
control characters but tab and line breaks: the API refuses them in JSON bodies the same way
(ledger.api.inputs), since a NUL goes into records that PostgreSQL's jsonb cannot read back."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ledger.errors import InvalidRequest

__all__ = ["check_form_text"]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NAME_CHARS_SHOWN = 80


def check_form_text(fields: Mapping[str, object]) -> None:
    """422 ``invalid_field`` naming the first field (of strings, or lists of them) that holds a
    control character."""
    for name, value in fields.items():
        texts = value if isinstance(value, list) else [value]
        if any(isinstance(t, str) and _CONTROL.search(t) for t in texts) or _CONTROL.search(name):
            shown = _CONTROL.sub("?", name[:_NAME_CHARS_SHOWN])
            raise InvalidRequest(
                "invalid_field",
                f"{shown} must not contain NUL or other control characters (tab and line breaks aside)",
                field=shown,
            )
