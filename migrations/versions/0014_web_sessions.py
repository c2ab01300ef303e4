"""Web sessions: the pages under /ui/ sign in with an API token and keep a server-side session.

A session stores the SHA-256 of its secret (the browser's cookie holds the secret itself),
the token it was started with, and when it expires. The token is checked on every request,
so a revoked or expired token ends its sessions; deleting a token deletes them too.

Also an index on imports (created_at, id), the order of GET /imports and /ui/imports for
callers who see every lab.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("secret_hash", sa.LargeBinary, nullable=False, unique=True),
        sa.Column(
            "token_id",
            UUID(as_uuid=True),
            sa.ForeignKey("tokens.id", name="web_sessions_token_fkey", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("web_sessions_token_idx", "web_sessions", ["token_id"])
    op.create_index("web_sessions_expires_idx", "web_sessions", ["expires_at"])
    op.create_index("imports_created_idx", "imports", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("imports_created_idx", table_name="imports")
    op.drop_table("web_sessions")
