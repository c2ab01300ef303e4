"""Job lifecycle: a worker registry for readiness, and an import's retry attempts.

A dead worker used to leave /health/ready at 200, and a transient database failure ended an
import `failed` / `internal`. Workers now beat into `workers`; a transient failure is retried
(ledger.jobs.retry), each attempt recorded on the import, which waits in `retrying`.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BEFORE = ("queued", "parsing", "validating", "loading", "finalizing", "done", "failed", "cancelled")
_AFTER = ("queued", "parsing", "validating", "loading", "retrying", "finalizing", "done", "failed", "cancelled")


def _status_check(values: tuple[str, ...]) -> str:
    return f"status IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.add_column("imports", sa.Column("attempts", JSONB(), nullable=False, server_default=sa.text("'[]'::jsonb")))
    op.add_column("imports", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("imports_status_check", "imports", type_="check")
    op.create_check_constraint("imports_status_check", "imports", _status_check(_AFTER))
    op.create_table(
        "workers",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("hostname", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("running", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=sa.text("'{}'::uuid[]")),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.execute("UPDATE imports SET status = 'queued' WHERE status = 'retrying'")
    op.drop_constraint("imports_status_check", "imports", type_="check")
    op.create_check_constraint("imports_status_check", "imports", _status_check(_BEFORE))
    op.drop_column("imports", "retry_at")
    op.drop_column("imports", "attempts")
