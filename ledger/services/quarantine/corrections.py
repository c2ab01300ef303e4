"""A correction to a quarantined row: the policy to validate it with, the merged and validated
row, and the asset record it would commit. Nothing here touches the database."""

from __future__ import annotations

import msgspec

from ledger.core.hashing import leaf_hash
from ledger.core.policy import ManifestRefused, Policy
from ledger.core.policy.registry import PolicyRegistry, UnknownPolicy
from ledger.core.records import asset_record
from ledger.core.review import PolicyRef, Review, parse_review
from ledger.db.quarantine import ItemKey, ItemRow
from ledger.errors import Conflict, InvalidRequest
from ledger.ingest.limits import quarantined_cell_chars_max
from ledger.services.quarantine.reading import item_id

__all__ = ["Attempt", "replay_failed", "validate_correction"]

_POLICY_CHOICES = ("original", "current")


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """A validated correction, ready to be decided under the head lock."""

    key: ItemKey
    action: str  # resubmit | requeue | transfer
    values: dict[str, str]
    note: str | None
    policy: PolicyRef
    record: bytes
    leaf: bytes
    asset_key: tuple[str, str]
    supersede: bool
    # Move the key from the lab that holds it to the item's lab (an officer's transfer).
    transfer: bool = False


def _loaded(policies: PolicyRegistry, name: str) -> Policy:
    try:
        return policies.get(name)
    except UnknownPolicy as exc:
        raise Conflict("policy_unavailable", str(exc)) from exc


def _policy_for(policies: PolicyRegistry, item: ItemRow, choice: str | None) -> Policy:
    """The policy version that rejected the row, or the current one when asked explicitly."""
    if choice is not None and choice not in _POLICY_CHOICES:
        raise InvalidRequest("invalid_policy_choice", 'policy must be "original" or "current"')
    current = _loaded(policies, item.policy_name)
    if current.sha256 == item.policy_sha256 or choice == "current":
        return current
    raise Conflict(
        "policy_version_unavailable",
        f"the row was rejected by policy {item.policy_name!r} version {item.policy_version} "
        f'(sha256 {item.policy_sha256}), which is no longer loaded; pass "policy": "current" to '
        f"validate with version {current.version} (sha256 {current.sha256})",
        rejected_with={"name": item.policy_name, "version": item.policy_version, "sha256": item.policy_sha256},
        current={"name": current.name, "version": current.version, "sha256": current.sha256},
    )


def _correct(policy: Policy, item: ItemRow, values: dict[str, str]) -> tuple[bytes, tuple[str, str]]:
    """Merge ``values`` into the original row and validate it; the asset record and its key.

    Cells are aligned to the import's header (a row with too many or too few cells is cut or
    padded), and a field the header lacked is added as a column.
    """
    known = set(policy.field_names)
    unknown = sorted(set(values) - known)
    if unknown:
        raise InvalidRequest(
            "unknown_field", f"policy {policy.name!r} has no field {', '.join(unknown)}", fields=unknown
        )
    too_long = sorted(f for f, v in values.items() if len(v) > quarantined_cell_chars_max)
    if too_long:
        raise InvalidRequest(
            "value_too_long", f"values are limited to {quarantined_cell_chars_max} characters: {', '.join(too_long)}"
        )
    header = list(item.header)
    cells = (list(item.cells) + [""] * len(header))[: len(header)]
    try:
        columns = list(policy.bind_header(header).columns)
    except ManifestRefused as exc:
        raise InvalidRequest("header_not_bindable", f"the import's header does not fit the policy: {exc}") from exc
    for name in sorted(set(values) - set(columns)):
        header.append(name)
        columns.append(name)
        cells.append("")
    for position, name in enumerate(columns):
        if name in values:
            cells[position] = values[name]
    result = policy.bind_header(header).validate(cells)
    if result.errors:
        raise InvalidRequest(
            "still_invalid",
            f"row {item.row} still breaks {len(result.errors)} rule(s) of policy {policy.name!r} "
            f"version {policy.version}; nothing was changed",
            item=item_id(item.key),
            row=item.row,
            errors=[{"field": v.field, "rule": v.rule, "message": v.message} for v in result.errors],
        )
    assert result.data is not None and result.key is not None
    return asset_record(policy=policy.name, lab=item.lab, data=result.data), (result.key[0], result.key[1])


def validate_correction(
    policies: PolicyRegistry,
    item: ItemRow,
    *,
    action: str,
    values: dict[str, str],
    note: str | None,
    policy_choice: str | None,
    supersede: bool,
    transfer: bool = False,
) -> Attempt:
    """The correction ``values`` of ``item``, merged and validated, ready to be decided."""
    policy = _policy_for(policies, item, policy_choice)
    record, asset_key = _correct(policy, item, values)
    return Attempt(
        key=item.key,
        action=action,
        values=dict(sorted(values.items())),
        note=note,
        policy=PolicyRef(policy.name, policy.version, policy.sha256),
        record=record,
        leaf=leaf_hash(record),
        asset_key=asset_key,
        supersede=supersede,
        transfer=transfer,
    )


def replay_failed(policies: PolicyRegistry, item: ItemRow, note: str | None) -> Attempt:
    """The correction recorded by the item's latest (failed) entry, validated again."""
    assert item.last_record is not None
    failed: Review = parse_review(item.last_record)
    assert failed.policy is not None and failed.values is not None
    policy = _loaded(policies, failed.policy.name)
    if policy.sha256 != failed.policy.sha256:
        raise Conflict(
            "policy_version_unavailable",
            f"the failed correction was validated with policy {failed.policy.name!r} version "
            f"{failed.policy.version}, which is no longer loaded; resubmit it instead",
        )
    choice = "current" if policy.sha256 != item.policy_sha256 else None
    return validate_correction(
        policies,
        item,
        action="requeue",
        values=failed.values,
        note=note if note else failed.note,
        policy_choice=choice,
        supersede=False,
    )
