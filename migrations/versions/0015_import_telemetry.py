"""What operators need of each import: its stage timings and the trace it belongs to.

- ``stage_seconds``: how long each stage of the import took (upload, parse and validate, stage,
  decide, final transaction, projection), written by the API and the worker as the stages end.
  The metrics scrape builds its duration histograms from these rows, so every API process and
  worker reports the same figures and a restart loses none (no per-process files).
- ``trace_context``: the W3C ``traceparent`` of the request that recorded the import, so that
  the worker that runs it, minutes later and in another process, continues the same trace.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("imports", sa.Column("stage_seconds", JSONB, nullable=True))
    op.add_column("imports", sa.Column("trace_context", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("imports", "trace_context")
    op.drop_column("imports", "stage_seconds")
