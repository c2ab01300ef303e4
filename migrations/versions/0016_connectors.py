"""Connectors: registered upstream sources, their syncs, and the provenance an import carries.

- ``connectors``: one row per source (its validated definition, its lab, its schedule) and its
  incremental cursor, which moves only in the transaction that commits a sync's import.
- ``connector_syncs``: every sync, run by a worker or by `ledger pull` on a lab's machine: its
  status, the pages it read (URL, cursor, response SHA-256, records) and its errors, and the
  import it became.
- ``imports.source``: for an import made by a sync, what its receipt records of it (connector,
  cursor window, pages): docs/ledger-format.md §4.3.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connectors",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("lab", sa.Text, sa.ForeignKey("labs.name", name="connectors_lab_fkey"), nullable=False),
        sa.Column("definition", JSONB, nullable=False),
        sa.Column("schedule", sa.Text),
        sa.Column("scheduled", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column(
            "created_by",
            UUID(as_uuid=True),
            sa.ForeignKey("tokens.id", name="connectors_created_by_fkey", ondelete="SET NULL"),
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("cursor", JSONB),
        sa.Column("cursor_updated_at", sa.DateTime(timezone=True)),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "connector_syncs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "connector",
            sa.Text,
            sa.ForeignKey("connectors.name", name="connector_syncs_connector_fkey", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("lab", sa.Text, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("import_id", UUID(as_uuid=True), sa.ForeignKey("imports.id", name="connector_syncs_import_fkey")),
        sa.Column("manifest_sha256", sa.Text),
        sa.Column("records", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("fetched", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("skipped", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("pages", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("errors", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("problems", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("cursor_from", sa.Text),
        sa.Column("cursor_to", JSONB),
        sa.Column("requested_by", UUID(as_uuid=True)),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("origin IN ('worker', 'client')", name="connector_syncs_origin_check"),
        sa.CheckConstraint("status IN ('running', 'ok', 'partial', 'failed')", name="connector_syncs_status_check"),
    )
    op.create_index("connector_syncs_connector_idx", "connector_syncs", ["connector", "started_at"])
    op.create_index(
        "connector_syncs_import_idx",
        "connector_syncs",
        ["import_id"],
        postgresql_where=sa.text("import_id IS NOT NULL"),
    )
    op.add_column("imports", sa.Column("source", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("imports", "source")
    op.drop_index("connector_syncs_import_idx", table_name="connector_syncs")
    op.drop_index("connector_syncs_connector_idx", table_name="connector_syncs")
    op.drop_table("connector_syncs")
    op.drop_table("connectors")
