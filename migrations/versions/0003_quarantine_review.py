"""Quarantine review: review entries on the ledger (issue 4).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine_reviews",
        sa.Column("batch_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("import_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("row_no", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("acted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("record_hash", sa.LargeBinary(), nullable=True),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint(
            "action IN ('resubmit', 'requeue', 'dismiss', 'conflict', 'failed')",
            name="quarantine_reviews_action_check",
        ),
        sa.CheckConstraint("status IN ('open', 'resolved', 'dismissed')", name="quarantine_reviews_status_check"),
        sa.ForeignKeyConstraint(["batch_seq"], ["ledger_batches.seq"]),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"]),
        sa.ForeignKeyConstraint(["actor"], ["tokens.id"]),
        sa.PrimaryKeyConstraint("batch_seq", "idx"),
    )
    op.create_index(
        "quarantine_reviews_item_idx",
        "quarantine_reviews",
        ["import_id", "row_no", "batch_seq", "idx"],
        unique=False,
    )
    # A ledger table like the others: the function comes from 0001.
    op.execute(
        "CREATE TRIGGER quarantine_reviews_no_update_delete BEFORE UPDATE OR DELETE ON quarantine_reviews "
        "FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
    )
    op.execute(
        "CREATE TRIGGER quarantine_reviews_no_truncate BEFORE TRUNCATE ON quarantine_reviews "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change()"
    )


def downgrade() -> None:
    op.drop_index("quarantine_reviews_item_idx", table_name="quarantine_reviews")
    op.drop_table("quarantine_reviews")
