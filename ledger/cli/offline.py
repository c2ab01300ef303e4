"""Offline verification commands: proofs, receipts, consistency, bundles.

Imports only ledger.core, msgspec, cryptography and the standard library, so an auditor can
run them from an environment with the core alone (no database, no web server packages).
Exit 0 when everything checks out; 1 with a message naming the failed check and where.
A checkpoint whose signature is not checked proves nothing, so every command needs a trusted
key (--public-key) and fails without one, unless told --no-signature-check: then it checks
everything else and says on stdout that the signatures were not checked.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from ledger.core.bundle import verify_bundle_file
from ledger.core.checkpoint import Checkpoint
from ledger.core.errors import LedgerError
from ledger.core.failures import VerificationError
from ledger.core.note import Verifier
from ledger.core.proofs import (
    ConsistencyProof,
    EntryProof,
    ReceiptProof,
    ReceiptVerified,
    decode_document,
    read_checkpoint,
    verify_consistency_proof,
    verify_entry_proof,
    verify_receipt_proof,
)

__all__ = ["add_commands", "check_receipt", "load_verifiers"]

_READ_BLOCK = 1 << 20


class UsageError(Exception):
    """A file or key the user named cannot be read."""


def _read_text(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path}: {exc}") from exc


def load_verifiers(values: list[str] | None) -> list[Verifier]:
    """Each value is a verifier key, or a file holding keys one per line or the JSON list
    GET /audit/public-key returns."""
    keys: list[Verifier] = []
    for value in values or []:
        text = value
        if "+" not in value or Path(value).is_file():
            text = _read_text(value, "public key file")
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = msgspec.json.decode(stripped)
                lines = [item["verifier_key"] for item in items]
            except (msgspec.DecodeError, TypeError, KeyError) as exc:
                raise UsageError(f"{value}: not a list of keys from /audit/public-key") from exc
        else:
            lines = [line for line in stripped.splitlines() if line.strip()]
        keys.extend(Verifier.parse(line) for line in lines)
    return keys


NOT_CHECKED = (
    "SIGNATURES NOT CHECKED (--no-signature-check): the checkpoints are not authenticated; "
    "this shows only that the documents agree with each other"
)


def trusted_keys(args: argparse.Namespace) -> list[Verifier] | None:
    """The keys signatures are checked against; None (after saying so on stdout) with
    --no-signature-check. Without either, nothing could vouch for a checkpoint: a usage error."""
    if args.no_signature_check:
        if args.public_key:
            raise UsageError("--public-key and --no-signature-check contradict each other; give one")
        print(NOT_CHECKED)
        return None
    if not args.public_key:
        raise UsageError(
            "cannot check the checkpoint signatures: no --public-key given (GET /audit/public-key lists"
            " the server's keys); pass --no-signature-check to check everything but the signatures"
        )
    keys = load_verifiers(args.public_key)
    if not keys:
        raise UsageError(f"no verifier key in {', '.join(args.public_key)}: cannot check the checkpoint signatures")
    return keys


def _checkpoint_text(path: str, what: str) -> str:
    """A checkpoint file: the signed note itself, or the JSON the API serves it in."""
    text = _read_text(path, what)
    if text.lstrip().startswith("{"):
        try:
            note = msgspec.json.decode(text)["note"]
        except (msgspec.DecodeError, TypeError, KeyError) as exc:
            raise UsageError(f"{path}: JSON without a 'note' member") from exc
        if not isinstance(note, str):
            raise UsageError(f"{path}: 'note' is not a string")
        return note
    return text


def _describe(checkpoint: Checkpoint) -> str:
    return f"{checkpoint.origin} size {checkpoint.size} root {checkpoint.root.hex()}"


def cmd_verify_proof(args: argparse.Namespace) -> int:
    verifiers = trusted_keys(args)
    data = _read_text(args.file, "proof")
    try:
        kind = msgspec.json.decode(data, type=dict[str, Any]).get("type")
    except msgspec.DecodeError as exc:
        raise VerificationError("document_format", args.file, f"not a proof document: {exc}") from exc
    if kind == "receipt_proof":
        receipt = verify_receipt_proof(decode_document(data, ReceiptProof, where=args.file), verifiers)
        print(f"receipt of task {receipt.receipt.task_id} is in batch {receipt.batch_seq}")
        print(f"signed checkpoint: {_describe(receipt.checkpoint)}")
        return 0
    proof = decode_document(data, EntryProof, where=args.file)
    result = verify_entry_proof(proof, verifiers)
    print(f"record {result.leaf_hash} is entry {result.index} of batch {result.batch_seq}")
    print(f"signed checkpoint: {_describe(result.checkpoint)}")
    return 0


def _file_chunks(path: str) -> Iterator[bytes]:
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_READ_BLOCK):
                yield chunk
    except OSError as exc:
        raise UsageError(f"cannot read manifest {path}: {exc}") from exc


def check_receipt(receipt: str, manifest: str, verifiers: list[Verifier] | None) -> ReceiptVerified:
    """The receipt in file ``receipt``, once it checks out against the manifest file and the
    keys (`ledger verify-receipt`, and `ledger submit --receipt` on each receipt it saves)."""
    proof = decode_document(_read_text(receipt, "receipt"), ReceiptProof, where=receipt)
    return verify_receipt_proof(proof, verifiers, manifest=_file_chunks(manifest))


def cmd_verify_receipt(args: argparse.Namespace) -> int:
    verifiers = trusted_keys(args)
    result = check_receipt(args.receipt, args.manifest, verifiers)
    r = result.receipt
    print(f"manifest {args.manifest} is the one recorded: sha256 {r.manifest_sha256}")
    print(f"task {r.task_id}, lab {r.lab}, policy {r.policy.name} v{r.policy.version} (sha256 {r.policy.sha256})")
    print(
        f"rows: {r.rows.total} total = {r.rows.committed} committed + {r.rows.duplicate} duplicate"
        f" + {r.rows.quarantined} quarantined"
    )
    batches = ", ".join(f"{b.seq}" for b in r.batches) or "none"
    print(f"asset batches: {batches}; receipt in batch {result.batch_seq}")
    print(f"outcomes root: {r.outcomes_root}")
    print(f"signed checkpoint: {_describe(result.checkpoint)}")
    return 0


def cmd_verify_consistency(args: argparse.Namespace) -> int:
    verifiers = trusted_keys(args)
    old = _checkpoint_text(args.old_checkpoint, "old checkpoint")
    new = _checkpoint_text(args.new_checkpoint, "new checkpoint")
    proof = decode_document(_read_text(args.proof, "proof"), ConsistencyProof, where=args.proof)
    a, b = verify_consistency_proof(old, new, proof, verifiers)
    print(f"consistent: the tree of size {b.size} extends the tree of size {a.size}")
    print(f"old: {_describe(a)}\nnew: {_describe(b)}")
    return 0


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    verifiers = trusted_keys(args)
    olds = [
        read_checkpoint(_checkpoint_text(p, "checkpoint"), verifiers, where=f"checkpoint {p}")
        for p in args.checkpoint or []
    ]
    started = time.perf_counter()
    try:
        with open(args.bundle, "rb") as f:
            report = verify_bundle_file(f, verifiers, old_checkpoints=olds)
    except OSError as exc:
        raise UsageError(f"cannot read bundle {args.bundle}: {exc}") from exc
    seconds = time.perf_counter() - started
    print(
        f"bundle verified: batches {report.from_size + 1}..{report.to_size} ({report.batches}), "
        f"{report.records} records, {report.outcomes} row outcomes, {report.checkpoints} signed checkpoints"
    )
    for old in olds:
        print(f"consistent with the earlier checkpoint of size {old.size}")
    rate = report.records / seconds if seconds > 0 else 0.0
    print(f"{seconds:.2f} s, {rate:,.0f} records/s", file=sys.stderr)
    return 0


def _guarded(func: Callable[[argparse.Namespace], int]) -> Callable[[Any, argparse.Namespace], int]:
    def run(_settings: Any, args: argparse.Namespace) -> int:
        try:
            return func(args)
        except LedgerError as exc:  # VerificationError says "<check> failed at <where>: <why>"
            print(f"VERIFICATION FAILED: {exc}", file=sys.stderr)
        except UsageError as exc:
            print(f"ledger: {exc}", file=sys.stderr)
        return 1

    return run


def add_commands(sub: Any) -> None:
    """Register the offline commands on the `ledger` argument parser."""
    key_help = (
        "trusted verifier key <name>+<id>+<key>, or a file of them (repeatable); required unless --no-signature-check"
    )
    skip_help = "check everything but the checkpoint signatures (which then prove nothing), and say so"

    p = sub.add_parser("verify-proof", help="check an entry proof (GET /audit/proofs/entries/ID) offline")
    p.add_argument("file")
    p.add_argument("--public-key", action="append", help=key_help)
    p.add_argument("--no-signature-check", action="store_true", help=skip_help)
    p.set_defaults(func=_guarded(cmd_verify_proof), offline=True)

    p = sub.add_parser("verify-receipt", help="check that a manifest file is the one a receipt records")
    p.add_argument("receipt")
    p.add_argument("manifest")
    p.add_argument("--public-key", action="append", help=key_help)
    p.add_argument("--no-signature-check", action="store_true", help=skip_help)
    p.set_defaults(func=_guarded(cmd_verify_receipt), offline=True)

    p = sub.add_parser("verify-consistency", help="check that a newer checkpoint extends an older one")
    p.add_argument("old_checkpoint")
    p.add_argument("new_checkpoint")
    p.add_argument("proof")
    p.add_argument("--public-key", action="append", help=key_help)
    p.add_argument("--no-signature-check", action="store_true", help=skip_help)
    p.set_defaults(func=_guarded(cmd_verify_consistency), offline=True)

    p = sub.add_parser("verify-bundle", help="check an export bundle (GET /audit/export) offline")
    p.add_argument("bundle")
    p.add_argument("--public-key", action="append", help=key_help)
    p.add_argument("--no-signature-check", action="store_true", help=skip_help)
    p.add_argument(
        "--checkpoint", action="append", help="an earlier checkpoint the bundle must be consistent with (repeatable)"
    )
    p.set_defaults(func=_guarded(cmd_verify_bundle), offline=True)
