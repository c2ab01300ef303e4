"""Resumable uploads (tus 1.0, /uploads/): how much of each upload has arrived, whose it is,
what it will be imported as, and when it expires, kept in the database so that any API process
can serve the next request of an upload (the file itself is in the spool, as a POST /imports
upload is).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tus_uploads",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "token_id", UUID(as_uuid=True), sa.ForeignKey("tokens.id", name="tus_uploads_token_fkey"), nullable=False
        ),
        sa.Column("lab", sa.Text, sa.ForeignKey("labs.name", name="tus_uploads_lab_fkey"), nullable=False),
        sa.Column("length", sa.BigInteger, nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("metadata", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("fields", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("filename", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.Text, nullable=True),
        sa.Column("spool_path", sa.Text, nullable=False),
        sa.Column(
            "import_id", UUID(as_uuid=True), sa.ForeignKey("imports.id", name="tus_uploads_import_fkey"), nullable=True
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("received >= 0 AND received <= length", name="tus_uploads_received_check"),
    )
    op.create_index("tus_uploads_expires_idx", "tus_uploads", ["expires_at"])


def downgrade() -> None:
    op.drop_index("tus_uploads_expires_idx", table_name="tus_uploads")
    op.drop_table("tus_uploads")
