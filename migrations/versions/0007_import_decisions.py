"""Decisions are taken before the final transaction, into a table other connections can read.

An import's final transaction used to decide every row (commit, duplicate, conflict, revision)
into a temporary table under the head lock, then hash the outcomes, then write: one step
after the other, all while every other writer waited. Now the decisions are committed first,
against a snapshot, into ``import_decisions``; the final transaction checks that nothing
committed since touched the import's keys, and a second connection hashes the outcomes while
it writes. Working state like ``import_staging``: unlogged, cleared after the commit.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, UUID

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_decisions",
        sa.Column("import_id", UUID(as_uuid=True), nullable=False),
        sa.Column("row_no", sa.BigInteger, nullable=False),
        sa.Column("asset_id", sa.Text),
        sa.Column("grant_code", sa.Text),
        sa.Column("leaf_hash", sa.LargeBinary),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("revision", sa.Integer),
        sa.Column("conflict_rows", ARRAY(sa.BigInteger)),
        sa.Column("ord", sa.BigInteger),
        prefixes=["UNLOGGED"],
    )


def downgrade() -> None:
    op.drop_table("import_decisions")
