"""Labs are a registry, and an asset key belongs to one lab; an officer may transfer it.

Labs were free-form strings on tokens and imports: an import to a lab named ``' OR 1=1 --``
committed. They are now rows an admin adds (``POST /labs``, ``ledger lab add``), and tokens and
imports naming an unknown lab are refused. Existing labs (those any token, import or asset
names) are registered here, so nothing that worked stops working.

Review entries gain the action ``transfer`` (docs/ledger-format.md §4.4): an officer's decision
to move an asset key from the lab that holds it to the lab of a quarantined row.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_OLD_ACTIONS = "('resubmit', 'requeue', 'dismiss', 'conflict', 'failed')"
_NEW_ACTIONS = "('resubmit', 'requeue', 'dismiss', 'conflict', 'failed', 'transfer')"


def upgrade() -> None:
    op.create_table(
        "labs",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
    )
    op.execute(
        """
        INSERT INTO labs (name)
        SELECT lab FROM (
            SELECT unnest(labs) AS lab FROM tokens
            UNION SELECT lab FROM imports
            UNION SELECT lab FROM assets
        ) known
        WHERE lab IS NOT NULL
        ON CONFLICT DO NOTHING
        """
    )
    op.create_foreign_key("imports_lab_fkey", "imports", "labs", ["lab"], ["name"])
    op.drop_constraint("quarantine_reviews_action_check", "quarantine_reviews", type_="check")
    op.create_check_constraint("quarantine_reviews_action_check", "quarantine_reviews", f"action IN {_NEW_ACTIONS}")


def downgrade() -> None:
    op.drop_constraint("quarantine_reviews_action_check", "quarantine_reviews", type_="check")
    op.create_check_constraint("quarantine_reviews_action_check", "quarantine_reviews", f"action IN {_OLD_ACTIONS}")
    op.drop_constraint("imports_lab_fkey", "imports", type_="foreignkey")
    op.drop_table("labs")
