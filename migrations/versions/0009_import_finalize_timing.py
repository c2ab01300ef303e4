"""When an import entered its final step, and what that step was expected to cost a row.

The ETA of a running import counted only the bytes left to read, so it said 0 s through the
final transaction, which for a large manifest is most of the wait. The worker now records when
the final step starts, and, when the import starts, the cost per row of the final steps of this
server's recent imports; the ETA adds the final step from them.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("imports", sa.Column("finalizing_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("imports", sa.Column("finalize_seconds_per_row", sa.Double(), nullable=True))
    op.create_index(
        "imports_finalized_idx",
        "imports",
        ["dry_run", "finished_at"],
        postgresql_where=sa.text("status = 'done' AND finalizing_at IS NOT NULL AND rows_total >= 10000"),
    )


def downgrade() -> None:
    op.drop_index("imports_finalized_idx", table_name="imports")
    op.drop_column("imports", "finalize_seconds_per_row")
    op.drop_column("imports", "finalizing_at")
