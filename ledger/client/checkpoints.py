"""`ledger checkpoint pull`: the latest signed checkpoint, checked against a pinned key, and
against the last one this machine verified for the same origin and key.

The key is the one the user pinned, never one the server names: a server that could choose
the key could sign anything. A newer checkpoint is kept only when a consistency proof shows its
tree extends the kept one; a smaller tree, another root at the same size or a failed proof is
a fork or a rewrite, refused whatever URL the server now answers on (the state is keyed by the
checkpoint's origin and the key, not by the URL).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import stamina

from ledger.client.retry import ATTEMPTS, Backoff, check
from ledger.core.checkpoint import Checkpoint, verify_checkpoint
from ledger.core.note import Verifier
from ledger.core.proofs import ConsistencyProof, decode_document, verify_consistency_proof

__all__ = ["Pulled", "Rejected", "pull"]


class Rejected(Exception):
    """The server's checkpoint does not extend the one kept: it must not replace it."""


@dataclass(frozen=True)
class Pulled:
    checkpoint: Checkpoint
    previous: Checkpoint | None
    state_file: Path

    def as_json(self) -> dict[str, Any]:
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "previous_size": None if self.previous is None else self.previous.size,
            "state_file": str(self.state_file),
        }


def _state_file(state_dir: Path, origin: str, verifiers: Sequence[Verifier]) -> Path:
    keys = "\n".join(sorted(v.encode() for v in verifiers))
    name = hashlib.sha256(f"{origin}\n{keys}".encode()).hexdigest()[:32]
    return state_dir / "checkpoints" / f"{name}.note"


async def _get(client: httpx.AsyncClient, backoff: Backoff, url: str, **params: int) -> Any:
    async for attempt in stamina.retry_context(on=backoff, attempts=ATTEMPTS, timeout=None):
        with attempt:
            return check(await client.get(url, params=params)).json()
    raise AssertionError("stamina ends with the last error")  # pragma: no cover


async def pull(
    client: httpx.AsyncClient, verifiers: Sequence[Verifier], state_dir: Path, *, max_wait: float = 300.0
) -> Pulled:
    """The server's latest checkpoint, verified and kept; Rejected (or a VerificationError of
    the core) when it cannot be trusted."""
    backoff = Backoff(max_wait)
    latest = await _get(client, backoff, "/audit/checkpoints/latest")
    note = latest.get("note") if isinstance(latest, dict) else None
    if not isinstance(note, str):
        raise Rejected("the server's answer has no checkpoint note")
    new = verify_checkpoint(note, verifiers, where="latest checkpoint")
    path = _state_file(state_dir, new.origin, verifiers)
    kept = _load(path)
    old: Checkpoint | None = None
    if kept is not None:
        # Checked again: the state file is only as trustworthy as its signature.
        old = verify_checkpoint(kept, verifiers, where=f"kept checkpoint {path}")
        if new.size < old.size:
            raise Rejected(
                f"the server's tree ({new.size} batches) is smaller than the one verified before ({old.size}):"
                " the log was truncated or this is another log under the same origin"
            )
        if new.size == old.size and new.root != old.root:
            raise Rejected(
                f"the server's root at size {new.size} is {new.root.hex()}, but the one verified before is"
                f" {old.root.hex()}: the log was rewritten (a fork)"
            )
        if new.size > old.size:
            body = await _get(client, backoff, "/audit/proofs/consistency", **{"from": old.size, "to": new.size})
            proof = decode_document(json.dumps(body), ConsistencyProof, where="consistency proof")
            # Our kept note and the note just verified, never the notes the proof carries.
            verify_consistency_proof(kept, note, proof, verifiers)
    if old is None or new.size > old.size:
        _save(path, note)
    return Pulled(checkpoint=new, previous=old, state_file=path)


def _load(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _save(path: Path, note: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_suffix(f".{os.getpid()}.tmp")
    temp.write_text(note, encoding="utf-8")
    os.replace(temp, path)
