"""Imports: submission options, detected format, reader warnings, resume checkpoint.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "imports", sa.Column("options", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False)
    )
    op.add_column("imports", sa.Column("format", postgresql.JSONB(), nullable=True))
    op.add_column(
        "imports", sa.Column("warnings", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False)
    )
    op.add_column("imports", sa.Column("checkpoint", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    for column in ("checkpoint", "warnings", "format", "options"):
        op.drop_column("imports", column)
