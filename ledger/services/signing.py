"""The checkpoint signing key: given by configuration, or generated once under LEDGER_HOME."""

from __future__ import annotations

import contextlib
import os
import uuid

from ledger.config import Settings
from ledger.core.note import Signer
from ledger.db.checkpoints import CheckpointSigning

__all__ = ["CheckpointSigning", "checkpoint_origin", "load_signer", "load_signing"]


def load_signer(settings: Settings) -> Signer:
    """The configured key file, or home/signing.key created (mode 0600) on first start.

    Two processes starting at once (API and worker) race on creation; O_EXCL makes one win and
    the other read what it wrote.
    """
    path = settings.signing_key_path
    if settings.signing_key_file is not None or path.exists():
        return Signer.parse(path.read_text(encoding="utf-8"))
    name = settings.checkpoint_origin or f"ledger.local/{uuid.uuid4().hex[:12]}"
    signer = Signer.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(signer.encode() + "\n")
    try:
        os.link(tmp, path)  # atomic, and refuses to replace a key another process wrote
    except FileExistsError:
        return Signer.parse(path.read_text(encoding="utf-8"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return signer


def checkpoint_origin(settings: Settings, signer: Signer) -> str:
    return settings.checkpoint_origin or signer.name


def load_signing(settings: Settings) -> CheckpointSigning:
    """The key (loaded, or created on first start) and origin that this process signs
    checkpoints with; handed to whatever commits (the worker, the API's review decisions)."""
    signer = load_signer(settings)
    return CheckpointSigning(signer=signer, origin=checkpoint_origin(settings, signer))
