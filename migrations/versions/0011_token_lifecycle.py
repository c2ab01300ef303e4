"""Token lifecycle: an expiry and a last-used time on every token.

Tokens used to live until revoked with SQL. They now expire (LEDGER_TOKEN_TTL_DAYS, default
90; existing tokens keep no expiry, as they were issued), and authentication records when each
was last used, at most once a minute.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("tokens", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("tokens", "last_used_at")
    op.drop_column("tokens", "expires_at")
