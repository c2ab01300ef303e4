"""The outcome index of import_rows covers the rows that are not committed.

Nearly every row of a manifest commits, and the index on (import_id, outcome, row_no) served
only the lookups of the other rows (quarantined and duplicate listings, the officers' queue);
a committed row is found by the primary key. Maintaining it for every committed row cost
about a third of writing the row outcomes, serially in the final transaction of an import.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("import_rows_outcome_idx", table_name="import_rows")
    op.create_index(
        "import_rows_outcome_idx",
        "import_rows",
        ["import_id", "outcome", "row_no"],
        postgresql_where=sa.text("outcome <> 'committed'"),
    )


def downgrade() -> None:
    op.drop_index("import_rows_outcome_idx", table_name="import_rows")
    op.create_index("import_rows_outcome_idx", "import_rows", ["import_id", "outcome", "row_no"])
