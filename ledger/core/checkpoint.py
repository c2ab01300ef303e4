"""Transparency-log checkpoints (https://c2sp.org/tlog-checkpoint) as signed notes.

Body: ``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed by optional extension lines
(we write none and keep any we read). The tree is the RFC 9162 tree over the ledger's batch
headers (see ledger.core.proofs.tree_leaf), so the size is the number of batches.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

import msgspec

from ledger.core.failures import NoteError
from ledger.core.note import Signer, Verifier, open_note, sign_note

__all__ = ["Checkpoint", "encode_body", "parse_body", "sign_checkpoint", "verify_checkpoint"]


class Checkpoint(msgspec.Struct, frozen=True):
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def encode_body(checkpoint: Checkpoint) -> str:
    if len(checkpoint.root) != 32:
        raise NoteError("checkpoint_format", "root", "a root hash is 32 bytes")
    if not checkpoint.origin or "\n" in checkpoint.origin:
        raise NoteError("checkpoint_format", "origin", "the origin is one non-empty line")
    root = base64.b64encode(checkpoint.root).decode()
    return "".join(f"{line}\n" for line in (checkpoint.origin, str(checkpoint.size), root, *checkpoint.extensions))


def parse_body(body: str, *, where: str = "checkpoint") -> Checkpoint:
    lines = body.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint_format", where, "a checkpoint body has origin, size and root lines")
    origin, size_text, root_text, *extensions = lines[:-1]
    if not origin:
        raise NoteError("checkpoint_format", where, "empty origin line")
    if not size_text.isdigit() or not size_text.isascii() or (size_text != "0" and size_text.startswith("0")):
        raise NoteError("checkpoint_format", where, f"tree size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError("checkpoint_format", where, f"root hash is not base64: {exc}") from exc
    if len(root) != 32:
        raise NoteError("checkpoint_format", where, f"root hash of {len(root)} bytes, expected 32")
    if any(not line for line in extensions):
        raise NoteError("checkpoint_format", where, "empty extension line")
    size = int(size_text)
    if size >= 2**63:
        raise NoteError("checkpoint_format", where, "tree size out of range")
    return Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    return sign_note(encode_body(checkpoint), [signer])


def verify_checkpoint(
    text: str, verifiers: Iterable[Verifier], *, where: str = "checkpoint", origin: str | None = None
) -> Checkpoint:
    """The checkpoint a signed note states, once a trusted key's signature checks out."""
    note = open_note(text, verifiers, where=where)
    checkpoint = parse_body(note.body, where=where)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError("checkpoint_origin", where, f"origin {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
