"""Review entries (ledger format v1, docs/ledger-format.md §4.4): every decision on a
quarantined row, as a canonical record in a batch of kind ``review``.

Pure: the shell decides what happened; this module only says which combinations are a valid
review and produces (or parses back) their bytes.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from ledger.core.canonical import encode
from ledger.core.errors import LedgerFormatError
from ledger.core.records import FORMAT_VERSION

__all__ = [
    "ACTIONS",
    "REASONS",
    "STATUSES",
    "Actor",
    "Correction",
    "ItemRef",
    "PolicyRef",
    "Review",
    "Transfer",
    "parse_review",
    "review_record",
]

STATUSES = frozenset({"open", "resolved", "dismissed"})
REASONS = frozenset({"schema_violation", "duplicate_key_in_manifest", "other_lab", "conflict", "transient_failure"})
ACTIONS = frozenset({"resubmit", "requeue", "dismiss", "conflict", "failed", "transfer"})
CORRECTION_OUTCOMES = frozenset({"committed", "duplicate", "conflict", "failed"})

# What each action leaves behind: the item's status, and which correction outcomes it may carry
# (None: no correction at all).
_RULES: dict[str, tuple[str, frozenset[str] | None]] = {
    "resubmit": ("resolved", frozenset({"committed", "duplicate"})),
    "requeue": ("resolved", frozenset({"committed", "duplicate"})),
    "dismiss": ("dismissed", None),
    "conflict": ("open", frozenset({"conflict"})),
    "failed": ("open", frozenset({"failed"})),
    "transfer": ("resolved", frozenset({"committed"})),
}


class ItemRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    task_id: str
    row: int


class Actor(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token_id: str
    role: str
    label: str | None


class PolicyRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    version: str
    sha256: str


class Correction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    outcome: str
    record_hash: str
    # The key's latest record hash in the ledger when the action was decided (None: new key,
    # or unknown because the attempt failed before reading it).
    ledger_hash: str | None


class Transfer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who held the asset key before a transfer, and who holds it after (document revision 3)."""

    from_lab: str
    to_lab: str


# omit_defaults: ``transfer`` is a member of transfer entries only, so every entry of the
# other actions keeps exactly the v1 members (and the bytes it had).
class Review(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    v: int
    type: str
    item: ItemRef
    action: str
    status: str
    reason: str
    actor: Actor
    at: str
    note: str | None
    values: dict[str, str] | None
    policy: PolicyRef | None
    correction: Correction | None
    error: str | None
    transfer: Transfer | None = None


def _is_hex64(value: str | None) -> bool:
    return value is not None and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def check_review(review: Review) -> None:
    """Raise LedgerFormatError unless ``review`` is a well-formed v1 review entry."""
    if review.type != "review" or review.v != FORMAT_VERSION:
        raise LedgerFormatError(f"not a v{FORMAT_VERSION} review (type {review.type!r}, v {review.v})")
    rule = _RULES.get(review.action)
    if rule is None:
        raise LedgerFormatError(f"unknown review action {review.action!r}")
    status, outcomes = rule
    if review.status != status:
        raise LedgerFormatError(f"a {review.action} leaves the item {status}, not {review.status!r}")
    if review.reason not in REASONS:
        raise LedgerFormatError(f"unknown quarantine reason {review.reason!r}")
    if review.action == "conflict" and review.reason != "conflict":
        raise LedgerFormatError("a conflict entry has reason conflict")
    if review.action == "failed" and review.reason != "transient_failure":
        raise LedgerFormatError("a failed entry has reason transient_failure")
    _check_transfer(review)
    if review.item.row < 1:
        raise LedgerFormatError("item rows count from 1")
    if outcomes is None:
        if review.correction is not None or review.values is not None or review.policy is not None:
            raise LedgerFormatError("a dismissal carries no correction, values or policy")
        if not (review.note or "").strip():
            raise LedgerFormatError("a dismissal needs a non-empty note (the reason)")
    else:
        c = review.correction
        if c is None or c.outcome not in outcomes:
            raise LedgerFormatError(f"a {review.action} carries a correction with outcome in {sorted(outcomes)}")
        if not _is_hex64(c.record_hash) or (c.ledger_hash is not None and not _is_hex64(c.ledger_hash)):
            raise LedgerFormatError("record hashes are 64 lowercase hex characters")
        if c.outcome == "duplicate" and c.ledger_hash != c.record_hash:
            raise LedgerFormatError("a duplicate correction equals the ledger's latest revision")
        if c.outcome == "conflict" and (c.ledger_hash is None or c.ledger_hash == c.record_hash):
            raise LedgerFormatError("a conflict names the different, later revision in the ledger")
        if review.values is None or review.policy is None:
            raise LedgerFormatError(f"a {review.action} records the corrected values and the policy used")
    if (review.error is not None) != (review.action == "failed"):
        raise LedgerFormatError("an error code is recorded for failed entries only")


def _check_transfer(review: Review) -> None:
    """A transfer names both labs, says why, and supersedes the other lab's latest revision."""
    t = review.transfer
    if (t is not None) != (review.action == "transfer"):
        raise LedgerFormatError("a transfer member is carried by transfer entries only, and always by them")
    if t is None:
        return
    if not t.from_lab or not t.to_lab or t.from_lab == t.to_lab:
        raise LedgerFormatError("a transfer moves an asset key between two different, named labs")
    if not (review.note or "").strip():
        raise LedgerFormatError("a transfer needs a non-empty note (why)")
    c = review.correction
    if c is None or c.ledger_hash is None or c.ledger_hash == c.record_hash:
        raise LedgerFormatError("a transfer names the revision of the lab that held the key")


def review_record(
    *,
    task_id: str,
    row: int,
    action: str,
    status: str,
    reason: str,
    actor: Actor,
    at: str,
    note: str | None,
    values: Mapping[str, str] | None = None,
    policy: PolicyRef | None = None,
    correction: Correction | None = None,
    error: str | None = None,
    transfer: Transfer | None = None,
) -> bytes:
    """The canonical bytes of one review entry; every v1 member is always present (null if
    unused), and ``transfer`` in transfer entries only."""
    review = Review(
        v=FORMAT_VERSION,
        type="review",
        item=ItemRef(task_id=task_id, row=row),
        action=action,
        status=status,
        reason=reason,
        actor=actor,
        at=at,
        note=note,
        values=None if values is None else dict(values),
        policy=policy,
        correction=correction,
        error=error,
        transfer=transfer,
    )
    check_review(review)
    return encode(msgspec.to_builtins(review))


_decoder = msgspec.json.Decoder(Review)


def parse_review(data: bytes) -> Review:
    """Decode and check a stored review entry; the bytes must be exactly the canonical ones."""
    try:
        review = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise LedgerFormatError(f"not a review: {exc}") from exc
    check_review(review)
    if encode(msgspec.to_builtins(review)) != data:
        raise LedgerFormatError("review bytes are not canonical")
    return review
