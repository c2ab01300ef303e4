"""Audit proofs: checkpoints, signing keys, batch tree (issue 5).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("batch_tree", "signing_keys", "checkpoints")


def upgrade() -> None:
    op.create_table(
        "batch_tree",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["seq"], ["ledger_batches.seq"]),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_table(
        "signing_keys",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("verifier_key", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", "key_id"),
        sa.UniqueConstraint("verifier_key"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tree_size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("key_name", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("tree_state", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_name", "key_id"], ["signing_keys.name", "signing_keys.key_id"], name="checkpoints_key_fkey"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("checkpoints_size_idx", "checkpoints", ["tree_size", "id"], unique=False)
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change()"
        )
    _backfill_tree()


def _backfill_tree() -> None:
    """Tree leaves for batches written before this migration: leaf_hash(canonical header)."""
    from ledger.core import records
    from ledger.core.proofs import tree_leaf

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT seq, kind, batch_hash, records, manifest_sha256, policy_sha256, committed_at "
            "FROM ledger_batches ORDER BY seq"
        )
    ).fetchall()
    values = [
        {
            "seq": r.seq,
            "leaf": tree_leaf(
                records.BatchHeader(
                    seq=r.seq,
                    kind=r.kind,
                    batch_hash=bytes(r.batch_hash).hex(),
                    records=r.records,
                    manifest_sha256=r.manifest_sha256,
                    policy_sha256=r.policy_sha256,
                    committed_at=records.format_time(r.committed_at),
                )
            ),
        }
        for r in rows
    ]
    if values:
        bind.execute(sa.text("INSERT INTO batch_tree (seq, leaf_hash) VALUES (:seq, :leaf)"), values)


def downgrade() -> None:
    op.drop_index("checkpoints_size_idx", table_name="checkpoints")
    op.drop_table("checkpoints")
    op.drop_table("signing_keys")
    op.drop_table("batch_tree")
