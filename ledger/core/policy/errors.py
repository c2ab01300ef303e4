"""Policy errors: a malformed policy file, and manifests a policy refuses before any row."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.core.errors import LedgerError

__all__ = ["ManifestRefused", "MissingColumnsError", "PolicyError", "SchemaDriftError"]


class PolicyError(LedgerError):
    """The policy file itself is malformed; the message names the file and the problem."""

    code = "policy_invalid"


class ManifestRefused(LedgerError):
    """The manifest's header does not fit the policy: no row is read."""

    code = "manifest_refused"
    unknown_columns: tuple[str, ...] = ()
    missing_columns: tuple[str, ...] = ()
    duplicate_columns: tuple[str, ...] = ()


class SchemaDriftError(ManifestRefused):
    code = "schema_drift"

    def __init__(
        self,
        unknown_columns: Sequence[str],
        missing_columns: Sequence[str],
        duplicate_columns: Sequence[str] = (),
    ) -> None:
        self.unknown_columns = tuple(unknown_columns)
        self.missing_columns = tuple(missing_columns)
        self.duplicate_columns = tuple(duplicate_columns)
        parts = []
        if self.unknown_columns:
            parts.append(f"columns the policy does not know: {', '.join(self.unknown_columns)}")
        if self.duplicate_columns:
            parts.append(f"columns given more than once: {', '.join(self.duplicate_columns)}")
        if self.missing_columns:
            parts.append(f"required columns missing: {', '.join(self.missing_columns)}")
        super().__init__("the manifest's header does not match the policy: " + "; ".join(parts))


class MissingColumnsError(ManifestRefused):
    code = "missing_columns"

    def __init__(self, missing_columns: Sequence[str]) -> None:
        self.missing_columns = tuple(missing_columns)
        super().__init__(f"required columns missing from the header: {', '.join(self.missing_columns)}")
