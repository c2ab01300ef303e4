"""The bulk path without per-row foreign keys.

Every row an import's final transaction writes ran a foreign-key trigger per constraint
(four per committed row), serially under the head lock. The code writes each parent in the
same transaction before its children, and verification re-derives every entry's batch from
the hash chain, so the checks bought no integrity that is not checked elsewhere.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (table, constraint, column, referenced table, referenced column); the names are those
# PostgreSQL gave the unnamed constraints of 0001.
FOREIGN_KEYS = (
    ("ledger_entries", "ledger_entries_batch_seq_fkey", "batch_seq", "ledger_batches", "seq"),
    ("ledger_entries", "ledger_entries_import_id_fkey", "import_id", "imports", "id"),
    ("import_rows", "import_rows_import_id_fkey", "import_id", "imports", "id"),
    ("assets", "assets_entry_id_fkey", "entry_id", "ledger_entries", "id"),
)


def upgrade() -> None:
    for table, name, _column, _parent, _key in FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")


def downgrade() -> None:
    for table, name, column, parent, key in FOREIGN_KEYS:
        op.create_foreign_key(name, table, parent, [column], [key])
