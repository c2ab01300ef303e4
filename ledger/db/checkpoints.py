"""The ledger tree over batch headers, and the signed checkpoints of it.

``chain.append_batches`` records each new batch's tree leaf (``record_tree_leaves``) and
``chain.advance_head`` signs a checkpoint of the new head inside the committing transaction,
under the head lock (``after_advance``), with the ``CheckpointSigning`` its caller passes
down: the API's and each worker's, loaded at start (ledger.services.signing). A writer with
none (a script, a test) still records tree leaves, and the next commit or an on-demand
checkpoint covers its batches.

Before signing, the tree it extends is checked (ledger.core.stored_tree): the last
checkpoint's stored compact range must give the root that checkpoint signed, and every batch
since must have the tree leaf its header gives. Otherwise the database was changed behind the
service's back and it refuses to sign (``CheckpointRefused``, logged as
``checkpoint_refused``): a signature over a forged tree would vouch for the forgery.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from ledger import audit_log
from ledger.core import records
from ledger.core.bundle import CompactRange
from ledger.core.checkpoint import Checkpoint, sign_checkpoint
from ledger.core.failures import Failure, VerificationError
from ledger.core.note import Signer, Verifier
from ledger.core.proofs import tree_leaf
from ledger.core.stored_tree import StoredCheckpointState, TreeCheck, resume
from ledger.db import head
from ledger.db.batches import HEADER_COLUMNS, header_of
from ledger.db.pool import Conn, Executor
from ledger.errors import ServiceError
from ledger.logs import get_logger

__all__ = [
    "CheckpointRefused",
    "CheckpointSigning",
    "SigningKey",
    "StoredCheckpoint",
    "after_advance",
    "checkpoint_at",
    "checkpoint_event",
    "checkpoint_notes",
    "latest_checkpoint",
    "list_checkpoints",
    "record_tree_leaves",
    "register_key",
    "registered_verifiers",
    "sign_head",
    "sign_head_created",
    "signing_keys",
    "stored_checkpoint_states",
    "tree_leaves",
]

log = get_logger("ledger.checkpoints")


class CheckpointRefused(ServiceError):
    """The stored tree state disagrees with the batch headers: no checkpoint is signed over it."""

    status = 500
    default_code = "checkpoint_refused"

    def __init__(self, failure: Failure) -> None:
        super().__init__(
            message=f"refusing to sign a checkpoint: {failure}; the database was changed outside the service",
            check=failure.reason,
            batch_seq=failure.batch_seq,
        )
        self.failure = failure


class StoredCheckpoint(msgspec.Struct, frozen=True):
    id: int
    tree_size: int
    root_hash: str
    origin: str
    key_name: str
    key_id: str
    note: str
    created_at: datetime


class SigningKey(msgspec.Struct, frozen=True):
    name: str
    key_id: str
    verifier_key: str
    created_at: datetime


class CheckpointSigning(msgspec.Struct, frozen=True):
    """The key that signs checkpoints and the origin line they carry."""

    signer: Signer
    origin: str


async def record_tree_leaves(conn: Conn, headers: Sequence[records.BatchHeader]) -> None:
    if headers:
        await conn.executemany(
            "INSERT INTO batch_tree (seq, leaf_hash) VALUES ($1, $2)",
            [(h.seq, tree_leaf(h)) for h in headers],
        )


async def after_advance(conn: Conn, signing: CheckpointSigning | None) -> None:
    """Called under the head lock once a writer has moved the head. A refusal to sign does not
    undo the commit (the ledger keeps recording; the batches are in the chain either way): it
    is logged for the operators, and every later checkpoint is refused until the tree and the
    headers agree again."""
    if signing is not None:
        with contextlib.suppress(CheckpointRefused):  # logged where it was raised
            checkpoint, created = await sign_head_created(conn, signing.signer, signing.origin, locked=True)
            if created:  # written once the writer's transaction has committed
                audit_log.after_commit(checkpoint_event(checkpoint))


def checkpoint_event(checkpoint: StoredCheckpoint) -> audit_log.AuditEvent:
    fields = audit_log.LedgerFields(
        tree_size=checkpoint.tree_size,
        root_hash=checkpoint.root_hash,
        checkpoint_id=checkpoint.id,
        key_name=checkpoint.key_name,
        key_id=checkpoint.key_id,
    )
    return audit_log.event(audit_log.CHECKPOINT_SIGNED, ledger=fields)


async def register_key(conn: Executor, signer: Signer) -> bool:
    """Publish the key (before it signs anything); whether it is new. A new key beside earlier
    ones is a rotation (a new LEDGER_SIGNING_KEY_FILE), and the audit log says so."""
    v = signer.verifier
    row = await conn.fetchrow(
        """
        WITH added AS (
            INSERT INTO signing_keys (name, key_id, public_key, verifier_key) VALUES ($1, $2, $3, $4)
            ON CONFLICT DO NOTHING RETURNING 1
        )
        SELECT (SELECT count(*) FROM added) AS added, (SELECT count(*) FROM signing_keys) AS before
        """,
        v.name,
        v.key_id.hex(),
        v.public_key,
        v.encode(),
    )
    assert row is not None
    if not row["added"]:
        return False
    action = audit_log.SIGNING_KEY_ROTATED if row["before"] else audit_log.SIGNING_KEY_REGISTERED
    fields = audit_log.LedgerFields(key_name=v.name, key_id=v.key_id.hex())
    audit_log.after_commit(audit_log.event(action, ledger=fields))
    return True


async def signing_keys(conn: Executor) -> list[SigningKey]:
    """Every key that has signed a checkpoint, newest first."""
    rows = await conn.fetch("SELECT name, key_id, verifier_key, created_at FROM signing_keys ORDER BY created_at DESC")
    return [
        SigningKey(name=r["name"], key_id=r["key_id"], verifier_key=r["verifier_key"], created_at=r["created_at"])
        for r in rows
    ]


_CHECKPOINT_COLUMNS = "id, tree_size, root_hash, origin, key_name, key_id, note, created_at"


def _checkpoint(row: Any) -> StoredCheckpoint:
    return StoredCheckpoint(
        id=row["id"],
        tree_size=row["tree_size"],
        root_hash=bytes(row["root_hash"]).hex(),
        origin=row["origin"],
        key_name=row["key_name"],
        key_id=row["key_id"],
        note=row["note"],
        created_at=row["created_at"],
    )


async def _catch_up(conn: Conn, head_seq: int) -> None:
    """Tree leaves for batches some writer appended without recording them."""
    last = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM batch_tree")
    if last >= head_seq:
        return
    rows = await conn.fetch(
        f"SELECT {HEADER_COLUMNS} FROM ledger_batches WHERE seq > $1 AND seq <= $2 ORDER BY seq", last, head_seq
    )
    await record_tree_leaves(conn, [header_of(r) for r in rows])


async def tree_leaves(conn: Executor, size: int) -> list[bytes]:
    rows = await conn.fetch("SELECT leaf_hash FROM batch_tree WHERE seq <= $1 ORDER BY seq", size)
    return [bytes(r[0]) for r in rows]


async def sign_head(conn: Conn, signer: Signer, origin: str, *, locked: bool = False) -> StoredCheckpoint:
    """A checkpoint of the current head signed by ``signer``; the latest one when it already
    states this head with this key (re-asking changes nothing)."""
    checkpoint, _ = await sign_head_created(conn, signer, origin, locked=locked)
    return checkpoint


async def sign_head_created(
    conn: Conn, signer: Signer, origin: str, *, locked: bool = False
) -> tuple[StoredCheckpoint, bool]:
    """``sign_head``, and whether the checkpoint is new (False: the latest one already stated
    this head with this key). Raises CheckpointRefused when the tree it would extend is not
    the one the batch headers give."""
    async with conn.transaction():
        # Unless the caller holds it, take the head lock: the tree must not grow while we read it.
        head_seq = await head.head_seq(conn) if locked else (await head.lock_head(conn)).seq
        await _catch_up(conn, head_seq)
        latest = await latest_checkpoint(conn)
        key_id = signer.key_id.hex()
        if (
            latest is not None
            and latest.tree_size == head_seq
            and latest.key_id == key_id
            and latest.key_name == signer.name
            and latest.origin == origin
        ):
            return latest, False
        tree = await _checked_tree_at(conn, head_seq, signer.verifier)
        tree_root = tree.root()
        note = sign_checkpoint(Checkpoint(origin=origin, size=head_seq, root=tree_root), signer)
        await register_key(conn, signer)
        row = await conn.fetchrow(
            f"""
            INSERT INTO checkpoints (tree_size, root_hash, origin, key_name, key_id, note, tree_state)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_CHECKPOINT_COLUMNS}
            """,
            head_seq,
            tree_root,
            origin,
            signer.name,
            key_id,
            note,
            b"".join(tree.nodes),
        )
        return _checkpoint(row), True


_STATE_COLUMNS = "id, tree_size, note, root_hash, tree_state"


def _state(row: Any) -> StoredCheckpointState:
    return StoredCheckpointState(
        id=row["id"],
        tree_size=row["tree_size"],
        note=row["note"],
        root_hash=bytes(row["root_hash"]),
        tree_state=bytes(row["tree_state"]),
    )


async def registered_verifiers(conn: Executor) -> list[Verifier]:
    """The keys of signing_keys: every key that ever signed a checkpoint here. A row that is no
    key (only a hand-edited table has one) is left out: what it signed then fails to open."""
    keys = []
    for r in await conn.fetch("SELECT verifier_key FROM signing_keys"):
        with contextlib.suppress(VerificationError):
            keys.append(Verifier.parse(r[0]))
    return keys


async def stored_checkpoint_states(conn: Executor, size_max: int | None = None) -> list[StoredCheckpointState]:
    """Every stored checkpoint (up to tree size ``size_max``), by tree size, then as issued."""
    rows = await conn.fetch(
        f"""
        SELECT {_STATE_COLUMNS} FROM checkpoints WHERE $1::bigint IS NULL OR tree_size <= $1
        ORDER BY tree_size, id
        """,
        size_max,
    )
    return [_state(r) for r in rows]


async def _checked_tree_at(conn: Conn, size: int, own: Verifier) -> CompactRange:
    """The tree of ``size`` leaves: the latest checkpoint's compact range, checked against the
    root it signed, extended with the leaf of each batch since, checked against its header; so
    a commit's checkpoint costs O(its batches). Raises CheckpointRefused on a disagreement."""
    row = await conn.fetchrow(
        f"SELECT {_STATE_COLUMNS} FROM checkpoints WHERE tree_size <= $1 ORDER BY tree_size DESC, id DESC LIMIT 1",
        size,
    )
    verifiers = [own, *await registered_verifiers(conn)]
    base: CompactRange | Failure = CompactRange()
    if row is not None:
        base = resume(_state(row), verifiers)
    failure = base if isinstance(base, Failure) else None
    if not isinstance(base, Failure):
        check = TreeCheck(verifiers, base)
        for b in await conn.fetch(
            f"""
            SELECT {", ".join(f"b.{c}" for c in HEADER_COLUMNS.split(", "))}, t.leaf_hash
            FROM ledger_batches b LEFT JOIN batch_tree t ON t.seq = b.seq
            WHERE b.seq > $1 AND b.seq <= $2 ORDER BY b.seq
            """,
            base.size,
            size,
        ):
            leaf = b["leaf_hash"]
            failure = check.batch(header_of(b), None if leaf is None else bytes(leaf))
            if failure is not None:
                break
        if failure is None and check.tree.size != size:
            failure = Failure(check.tree.size + 1, None, "tree_state_mismatch", f"the head is at batch {size}")
        if failure is None:
            return check.tree
    assert failure is not None
    log.error(
        "checkpoint_refused",
        check=failure.reason,
        batch_seq=failure.batch_seq,
        detail=failure.detail,
        tree_size=size,
    )
    # Evidence that the database was changed behind the service: written at once, whatever
    # becomes of the transaction it was found in.
    fields = audit_log.LedgerFields(tree_size=size, batch_seq=failure.batch_seq, entry_index=failure.entry)
    audit_log.emit(
        audit_log.event(audit_log.CHECKPOINT_REFUSED, outcome="failure", ledger=fields, error_code=failure.reason)
    )
    raise CheckpointRefused(failure)


async def latest_checkpoint(conn: Executor) -> StoredCheckpoint | None:
    row = await conn.fetchrow(f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY id DESC LIMIT 1")
    return None if row is None else _checkpoint(row)


async def checkpoint_at(conn: Executor, size: int) -> StoredCheckpoint | None:
    """The latest checkpoint issued for tree size ``size``."""
    row = await conn.fetchrow(
        f"SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size = $1 ORDER BY id DESC LIMIT 1", size
    )
    return None if row is None else _checkpoint(row)


async def list_checkpoints(conn: Executor, size_from: int, size_to: int | None, limit: int) -> list[StoredCheckpoint]:
    rows = await conn.fetch(
        f"""
        SELECT {_CHECKPOINT_COLUMNS} FROM checkpoints
        WHERE tree_size >= $1 AND ($2::bigint IS NULL OR tree_size <= $2)
        ORDER BY tree_size, id LIMIT $3
        """,
        size_from,
        size_to,
        limit,
    )
    return [_checkpoint(r) for r in rows]


async def checkpoint_notes(conn: Executor, size_from: int, size_to: int) -> dict[int, list[str]]:
    """The notes of the checkpoints with tree sizes in ``size_from``..``size_to``, by tree size,
    each size's in the order they were issued."""
    notes: dict[int, list[str]] = {}
    for r in await conn.fetch(
        "SELECT tree_size, note FROM checkpoints WHERE tree_size BETWEEN $1 AND $2 ORDER BY id",
        size_from,
        size_to,
    ):
        notes.setdefault(r["tree_size"], []).append(r["note"])
    return notes
