"""The current-state table becomes a projection applied after the commit, batch by batch.

The final transaction of an import used to upsert every committed row into ``assets``
serially under the head lock (about half of that transaction for a large manifest), and
while it ran, every ``GET /assets`` index scan walked hundreds of thousands of
not-yet-visible rows. Now the final transaction writes the ledger only; the projector
applies committed batches to ``assets`` in short transactions and records how far it got
in ``assets_projection.applied_seq``. Existing rows are already current, so the watermark
starts at the head.

Staged cells become raw JSON bytes, parsed into jsonb only for the few rows that end
quarantined instead of for every row at COPY time; a partial index finds the staged rows the
policy refused, so the final transaction reads them without scanning every staged record.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assets_projection",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("applied_seq", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="assets_projection_single_row"),
    )
    op.execute("INSERT INTO assets_projection (id, applied_seq) SELECT 1, seq FROM ledger_head WHERE id = 1")
    op.execute("ALTER TABLE import_staging ALTER COLUMN cells TYPE bytea USING convert_to(cells::text, 'UTF8')")
    op.create_index(
        "import_staging_errors_idx",
        "import_staging",
        ["import_id", "row_no"],
        postgresql_where=sa.text("errors IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("import_staging_errors_idx", table_name="import_staging")
    op.execute("ALTER TABLE import_staging ALTER COLUMN cells TYPE jsonb USING convert_from(cells, 'UTF8')::jsonb")
    op.drop_table("assets_projection")
