"""Initial schema: tokens, imports, the append-only ledger, the assets projection, the job queue.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 04:48:14.901180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

APPEND_ONLY_TABLES = ("ledger_batches", "ledger_entries", "import_rows")


def _execute_script(sql: str) -> None:
    """Run a multi-statement script: asyncpg prepares single statements only, so use its simple protocol."""
    from sqlalchemy.util import await_

    driver = op.get_bind().connection.dbapi_connection.driver_connection  # type: ignore[union-attr]
    await_(driver.execute(sql))


revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "import_staging",
        sa.Column("import_id", sa.UUID(), nullable=False),
        sa.Column("row_no", sa.BigInteger(), nullable=False),
        sa.Column("asset_id", sa.Text(), nullable=True),
        sa.Column("grant_code", sa.Text(), nullable=True),
        sa.Column("record", sa.LargeBinary(), nullable=True),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cells", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        prefixes=["UNLOGGED"],
    )
    op.create_index("import_staging_import_idx", "import_staging", ["import_id", "row_no"], unique=False)
    op.create_table(
        "ledger_head",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name="ledger_head_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column(
            "labs",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "role IN ('lab_manager', 'compliance_officer', 'auditor', 'admin')",
            name="tokens_role_check",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "imports",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("lab", sa.Text(), nullable=False),
        sa.Column("policy_name", sa.Text(), nullable=False),
        sa.Column("policy_version", sa.Text(), nullable=False),
        sa.Column("policy_sha256", sa.Text(), nullable=False),
        sa.Column("manifest_sha256", sa.Text(), nullable=False),
        sa.Column("manifest_bytes", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("spool_path", sa.Text(), nullable=False),
        sa.Column("dry_run", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'queued'"), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows_committed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows_duplicate", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("rows_quarantined", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("bytes_read", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("header", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("accepted_body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("submitted_by", sa.UUID(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'parsing', 'validating', 'loading', 'finalizing', 'done', 'failed', 'cancelled')",
            name="imports_status_check",
        ),
        sa.ForeignKeyConstraint(
            ["submitted_by"],
            ["tokens.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lab", "idempotency_key", name="imports_lab_idempotency_key"),
    )
    op.create_index("imports_lab_created_idx", "imports", ["lab", "created_at"], unique=False)
    op.create_table(
        "import_rows",
        sa.Column("import_id", sa.UUID(), nullable=False),
        sa.Column("row_no", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("asset_id", sa.Text(), nullable=True),
        sa.Column("grant_code", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("record_hash", sa.LargeBinary(), nullable=True),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("cells", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.CheckConstraint("outcome IN ('committed', 'duplicate', 'quarantined')", name="import_rows_outcome_check"),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
        ),
        sa.PrimaryKeyConstraint("import_id", "row_no"),
    )
    op.create_index("import_rows_outcome_idx", "import_rows", ["import_id", "outcome", "row_no"], unique=False)
    op.create_table(
        "ledger_batches",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("batch_hash", sa.LargeBinary(), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("manifest_sha256", sa.Text(), nullable=True),
        sa.Column("policy_sha256", sa.Text(), nullable=True),
        sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("import_id", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
        ),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ledger_batches_import_idx", "ledger_batches", ["import_id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False),
        sa.Column("idx", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("record", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("asset_id", sa.Text(), nullable=True),
        sa.Column("grant_code", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=True),
        sa.Column("import_id", sa.UUID(), nullable=True),
        sa.Column("row_no", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_seq"],
            ["ledger_batches.seq"],
        ),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["imports.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("batch_seq", "idx", name="ledger_entries_batch_idx"),
    )
    op.create_index(
        "ledger_entries_asset_idx",
        "ledger_entries",
        ["asset_id", "grant_code", "revision"],
        unique=False,
    )
    op.create_table(
        "assets",
        sa.Column("asset_id", sa.Text(), nullable=False),
        sa.Column("grant_code", sa.Text(), nullable=False),
        sa.Column("lab", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=True),
        sa.Column("location", sa.Text(), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_seq", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["ledger_entries.id"],
        ),
        sa.PrimaryKeyConstraint("asset_id", "grant_code"),
    )
    op.create_index("assets_grant_idx", "assets", ["grant_code"], unique=False)
    op.create_index("assets_lab_idx", "assets", ["lab", "asset_id", "grant_code"], unique=False)

    op.execute("INSERT INTO ledger_head (id, seq, chain_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))")
    # Append-only, defended in depth: the triggers stop ordinary UPDATE/DELETE/TRUNCATE;
    # a superuser can disable them, which is why verification recomputes every hash.
    op.execute(
        """
        CREATE FUNCTION ledger_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'ledger table % is append-only: % rejected', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in APPEND_ONLY_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_update_delete BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_reject_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change()"
        )
    # The job queue's own tables, rendered by the pinned pgqueuer version.
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    _execute_script(QueryBuilderEnvironment().build_install_query(create_schema=False))


def downgrade() -> None:
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment

    _execute_script(QueryBuilderEnvironment().build_uninstall_query())
    op.drop_index("assets_lab_idx", table_name="assets")
    op.drop_index("assets_grant_idx", table_name="assets")
    op.drop_table("assets")
    op.drop_index("ledger_entries_asset_idx", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index("ledger_batches_import_idx", table_name="ledger_batches")
    op.drop_table("ledger_batches")
    op.drop_index("import_rows_outcome_idx", table_name="import_rows")
    op.drop_table("import_rows")
    op.drop_index("imports_lab_created_idx", table_name="imports")
    op.drop_table("imports")
    op.drop_table("tokens")
    op.drop_table("ledger_head")
    op.drop_index("import_staging_import_idx", table_name="import_staging")
    op.drop_table("import_staging")
    op.execute("DROP FUNCTION ledger_reject_change()")
