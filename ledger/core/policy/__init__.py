"""Policies as data: load a descriptor, bind it to a manifest header, validate rows.

policy = load_policy(raw, source="policies/lab-inventory.json")
binding = policy.bind_header(header_cells)      # SchemaDriftError / MissingColumnsError
result = binding.validate(cells)                 # RowResult(data, errors, key)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from ledger.core.policy.descriptor import FieldSpec, PolicySpec, parse_descriptor
from ledger.core.policy.errors import (
    ManifestRefused,
    MissingColumnsError,
    PolicyError,
    SchemaDriftError,
)
from ledger.core.policy.headers import normalise_header
from ledger.core.policy.rules import Binding, RowResult, Violation

__all__ = [
    "Binding",
    "FieldSpec",
    "ManifestRefused",
    "MissingColumnsError",
    "Policy",
    "PolicyError",
    "RowResult",
    "SchemaDriftError",
    "Violation",
    "load_policy",
    "normalise_header",
]


class Policy:
    """A loaded, checked policy. Immutable; compiled per manifest header by ``bind_header``."""

    __slots__ = ("_header_names", "_spec", "_specs", "sha256")

    def __init__(self, spec: PolicySpec, sha256: str) -> None:
        self._spec = spec
        self._specs = {f.name: f for f in spec.fields}
        self._header_names = {
            **{alias: f.name for f in spec.fields for alias in f.aliases},
            **{f.name: f.name for f in spec.fields},
        }
        self.sha256 = sha256

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def version(self) -> str:
        return self._spec.version

    @property
    def title(self) -> str | None:
        return self._spec.title

    @property
    def descriptor(self) -> dict[str, Any]:
        return self._spec.descriptor

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self._spec.fields if f.required)

    @property
    def key_fields(self) -> tuple[str, ...]:
        return self._spec.primary_key

    def bind_header(self, header: Sequence[str]) -> Binding:
        columns: list[str] = []
        unknown: list[str] = []
        seen: set[str] = set()
        duplicates: list[str] = []
        for cell in header:
            normal = normalise_header(cell)
            field = self._header_names.get(normal)
            if field is None:
                unknown.append(normal or repr(cell))
                continue
            if field in seen:
                duplicates.append(field)
            seen.add(field)
            columns.append(field)
        missing = [name for name in self.required_columns if name not in seen]
        if unknown or duplicates:
            raise SchemaDriftError(unknown, missing, duplicates)
        if missing:
            raise MissingColumnsError(missing)
        return Binding(columns, self._specs, self.key_fields)


def load_policy(raw: bytes, *, source: str) -> Policy:
    """Parse and check a policy file; a malformed one raises PolicyError naming the problem."""
    return Policy(parse_descriptor(raw, source=source), hashlib.sha256(raw).hexdigest())
