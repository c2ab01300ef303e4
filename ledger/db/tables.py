"""The schema, declared once. Alembic migrations must build exactly this (tests/db checks it).

Ledger tables (append-only, guarded by triggers): ``ledger_batches``, ``ledger_entries``,
``import_rows``. Everything else is working state or a projection that can be rebuilt
from the ledger (``assets``) or from the import records (``imports``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

from ledger.core.roles import ROLES
from ledger.db import import_statuses

__all__ = [
    "APPEND_ONLY_TABLES",
    "IMPORT_STATUSES",
    "ROLES",
    "assets",
    "assets_projection",
    "batch_tree",
    "checkpoints",
    "import_decisions",
    "import_rows",
    "import_staging",
    "imports",
    "labs",
    "ledger_batches",
    "ledger_entries",
    "ledger_head",
    "metadata",
    "quarantine_reviews",
    "signing_keys",
    "tokens",
    "tus_uploads",
    "web_sessions",
    "workers",
]

metadata = MetaData()

IMPORT_STATUSES = import_statuses.STATUSES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


tokens = Table(
    "tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    # SHA-256 of the bearer token; the token itself is shown once and never stored.
    Column("token_hash", LargeBinary, nullable=False, unique=True),
    Column("role", Text, nullable=False),
    Column("labs", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
    Column("label", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("revoked_at", DateTime(timezone=True)),
    # None: never expires. Set from LEDGER_TOKEN_TTL_DAYS or `token create --expires-in`.
    Column("expires_at", DateTime(timezone=True)),
    # When the token last authenticated a request, to the minute (updated at most once a minute).
    Column("last_used_at", DateTime(timezone=True)),
    CheckConstraint(_in("role", ROLES), name="tokens_role_check"),
)

# The labs data may belong to (migration 0012): an admin registers each; tokens and imports
# naming another are refused, so a lab is never a free-form string.
labs = Table(
    "labs",
    metadata,
    Column("name", Text, primary_key=True),
    Column("title", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

imports = Table(
    "imports",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("idempotency_key", Text, nullable=False),
    Column("lab", Text, ForeignKey("labs.name", name="imports_lab_fkey"), nullable=False),
    Column("policy_name", Text, nullable=False),
    Column("policy_version", Text, nullable=False),
    Column("policy_sha256", Text, nullable=False),
    Column("manifest_sha256", Text, nullable=False),
    Column("manifest_bytes", BigInteger, nullable=False),
    Column("filename", Text),
    Column("spool_path", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False, server_default=text("false")),
    Column("status", Text, nullable=False, server_default=text("'queued'")),
    Column("rows_total", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_committed", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_duplicate", BigInteger, nullable=False, server_default=text("0")),
    Column("rows_quarantined", BigInteger, nullable=False, server_default=text("0")),
    Column("bytes_read", BigInteger, nullable=False, server_default=text("0")),
    Column("error", JSONB),
    # The manifest's header cells as written, for the error report.
    Column("header", JSONB),
    Column("accepted_body", JSONB, nullable=False),
    Column("submitted_by", UUID(as_uuid=True), ForeignKey("tokens.id")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    # When the import entered its final transaction, and what that step was expected to cost a
    # staged row, learned from this server's recent imports when it started: with the bytes
    # read, what its ETA is made of (ledger.services.progress.eta_seconds).
    Column("finalizing_at", DateTime(timezone=True)),
    Column("finalize_seconds_per_row", Double),
    # What the submitter asked for about the file (encoding, sheet); the detected format; what
    # the reader noticed but did not refuse (a Windows-1252 fallback, say).
    Column("options", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("format", JSONB),
    Column("warnings", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # Resume point of a re-picked job: what the last committed staging chunk reached.
    Column("checkpoint", JSONB),
    # Every attempt that ended in a transient failure, oldest first ({attempt, error, failed_at,
    # retry_at}), and when the next one is due while the import waits in 'retrying'.
    Column("attempts", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("retry_at", DateTime(timezone=True)),
    # Seconds each stage took, for the metrics' duration histograms, and the traceparent of the
    # request that recorded the import, which the worker's spans continue (migration 0015).
    Column("stage_seconds", JSONB),
    Column("trace_context", Text),
    # For an import made by a connector's sync: what its receipt records of the sync (migration 0016).
    Column("source", JSONB),
    CheckConstraint(_in("status", IMPORT_STATUSES), name="imports_status_check"),
    UniqueConstraint("lab", "idempotency_key", name="imports_lab_idempotency_key"),
)
Index("imports_lab_created_idx", imports.c.lab, imports.c.created_at)
# The order of GET /imports for callers who see every lab (migration 0014).
Index("imports_created_idx", imports.c.created_at, imports.c.id)

# The workers alive now: each beats every third of the heartbeat timeout and deletes its row
# when it stops cleanly, so readiness and `ledger status` need no process table of their own.
workers = Table(
    "workers",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("hostname", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The imports this worker is running (ids), as of its last beat.
    Column("running", ARRAY(UUID(as_uuid=True)), nullable=False, server_default=text("'{}'::uuid[]")),
)
# The most recent finished imports whose final step was timed: the history the ETA learns from.
Index(
    "imports_finalized_idx",
    imports.c.dry_run,
    imports.c.finished_at,
    postgresql_where=text("status = 'done' AND finalizing_at IS NOT NULL AND rows_total >= 10000"),
)

# One row, locked FOR UPDATE by whoever links the next batch: the only serial point.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    CheckConstraint("id = 1", name="ledger_head_single_row"),
)

ledger_batches = Table(
    "ledger_batches",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", Text, nullable=False),
    Column("batch_hash", LargeBinary, nullable=False),
    Column("records", Integer, nullable=False),
    Column("manifest_sha256", Text),
    Column("policy_sha256", Text),
    Column("committed_at", DateTime(timezone=True), nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    Column("import_id", UUID(as_uuid=True), ForeignKey("imports.id")),
)
Index("ledger_batches_import_idx", ledger_batches.c.import_id)

# No per-row foreign keys on the bulk path (migration 0005): ledger_entries.batch_seq and
# .import_id, import_rows.import_id and assets.entry_id were checked row by row, serially
# under the head lock, against parents the writer had just made sure of: the batches are
# appended earlier in the same transaction, the import row exists (it is locked first) and
# no code deletes imports, entries or batches. Verification checks what they guarded: it
# re-derives every entry of every chained batch from the hash chain (count, leaf hashes,
# Merkle root), and every import's row outcomes from its receipt; assets is a projection of
# the entries. What it does not read is a row naming a batch or import that does not exist.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("batch_seq", BigInteger, nullable=False),
    Column("idx", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    # The canonical bytes are the source of truth; every other column is an index into them.
    Column("record", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("asset_id", Text),
    Column("grant_code", Text),
    Column("revision", Integer),
    Column("import_id", UUID(as_uuid=True)),
    Column("row_no", BigInteger),
    UniqueConstraint("batch_seq", "idx", name="ledger_entries_batch_idx"),
)
Index(
    "ledger_entries_asset_idx",
    ledger_entries.c.asset_id,
    ledger_entries.c.grant_code,
    ledger_entries.c.revision,
)

# The outcome of every data row of every import: the receipt's outcomes_root covers these.
import_rows = Table(
    "import_rows",
    metadata,
    Column("import_id", UUID(as_uuid=True), primary_key=True),
    Column("row_no", BigInteger, primary_key=True, autoincrement=False),
    Column("outcome", Text, nullable=False),
    Column("asset_id", Text),
    Column("grant_code", Text),
    Column("revision", Integer),
    Column("record_hash", LargeBinary),
    Column("errors", JSONB),
    Column("cells", JSONB),
    CheckConstraint("outcome IN ('committed', 'duplicate', 'quarantined')", name="import_rows_outcome_check"),
)
# Only the rows that did not commit (a few percent): committed ones are found by the key.
Index(
    "import_rows_outcome_idx",
    import_rows.c.import_id,
    import_rows.c.outcome,
    import_rows.c.row_no,
    postgresql_where=import_rows.c.outcome != "committed",
)

# Current state: the latest revision per key. A projection of ledger_entries, rebuilt at will,
# applied after each commit by ledger.db.projection (never inside an import's final
# transaction); a row only ever moves to a higher revision.
assets = Table(
    "assets",
    metadata,
    Column("asset_id", Text, primary_key=True),
    Column("grant_code", Text, primary_key=True),
    Column("lab", Text, nullable=False),
    Column("category", Text),
    Column("location", Text),
    Column("revision", Integer, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("batch_seq", BigInteger, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("data", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("assets_grant_idx", assets.c.grant_code)
Index("assets_lab_idx", assets.c.lab, assets.c.asset_id, assets.c.grant_code)

# How far the projection has applied the chain: every asset entry in a batch up to applied_seq
# is reflected in assets. One row, locked by whoever applies the next batches.
assets_projection = Table(
    "assets_projection",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),
    Column("applied_seq", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="assets_projection_single_row"),
)

# Validated rows between the worker's COPY and the final transaction. UNLOGGED: it is
# rebuilt from the spooled file if lost, so WAL for it would be wasted I/O.
import_staging = Table(
    "import_staging",
    metadata,
    Column("import_id", UUID(as_uuid=True), nullable=False),
    Column("row_no", BigInteger, nullable=False),
    Column("asset_id", Text),
    Column("grant_code", Text),
    Column("record", LargeBinary),
    Column("leaf_hash", LargeBinary),
    Column("errors", JSONB),
    # The row's cells as JSON bytes, parsed into jsonb only if the row ends quarantined.
    Column("cells", LargeBinary),
    prefixes=["UNLOGGED"],
)
Index("import_staging_import_idx", import_staging.c.import_id, import_staging.c.row_no)
# The rows the policy refused (about 1% of a typical manifest), read without scanning the rest.
Index(
    "import_staging_errors_idx",
    import_staging.c.import_id,
    import_staging.c.row_no,
    postgresql_where=import_staging.c.errors.isnot(None),
)

# What the decide step made of each valid staged row (ledger.db.import_decisions), between that step's
# commit and the final transaction. UNLOGGED for the same reason as staging: it is re-derived.
import_decisions = Table(
    "import_decisions",
    metadata,
    Column("import_id", UUID(as_uuid=True), nullable=False),
    Column("row_no", BigInteger, nullable=False),
    Column("asset_id", Text),
    Column("grant_code", Text),
    Column("leaf_hash", LargeBinary),
    Column("decision", Text, nullable=False),
    Column("revision", Integer),
    Column("conflict_rows", ARRAY(BigInteger)),
    # Position among the import's committed rows, in row order: places the entry in its batch.
    Column("ord", BigInteger),
    prefixes=["UNLOGGED"],
)

# One row per review entry (a decision on a quarantined row), written with the entry and never
# changed: it indexes the entry's bytes by item, and its leaf_hash localises a rewritten entry.
# An item's status is that of its latest row (issue 4; docs/ledger-format.md §4.4).
quarantine_reviews = Table(
    "quarantine_reviews",
    metadata,
    Column("batch_seq", BigInteger, ForeignKey("ledger_batches.seq"), primary_key=True, autoincrement=False),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("import_id", UUID(as_uuid=True), ForeignKey("imports.id"), nullable=False),
    Column("row_no", BigInteger, nullable=False),
    Column("action", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", UUID(as_uuid=True), ForeignKey("tokens.id"), nullable=False),
    Column("acted_at", DateTime(timezone=True), nullable=False),
    Column("record_hash", LargeBinary),
    Column("leaf_hash", LargeBinary, nullable=False),
    CheckConstraint(
        "action IN ('resubmit', 'requeue', 'dismiss', 'conflict', 'failed', 'transfer')",
        name="quarantine_reviews_action_check",
    ),
    CheckConstraint("status IN ('open', 'resolved', 'dismissed')", name="quarantine_reviews_status_check"),
)
Index(
    "quarantine_reviews_item_idx",
    quarantine_reviews.c.import_id,
    quarantine_reviews.c.row_no,
    quarantine_reviews.c.batch_seq,
    quarantine_reviews.c.idx,
)

# Audit proofs (issue 5; docs/ledger-format.md §8-§11). The leaf of batch ``seq`` in the ledger
# tree, leaf_hash(canonical header), written with the batch so proofs need no re-encoding.
batch_tree = Table(
    "batch_tree",
    metadata,
    Column("seq", BigInteger, ForeignKey("ledger_batches.seq"), primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary, nullable=False),
)

# Every key that ever signed a checkpoint, so a rotated key keeps old checkpoints verifiable.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("name", Text, primary_key=True),
    Column("key_id", Text, primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("verifier_key", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Signed checkpoints (C2SP signed notes) of the ledger tree, as issued.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tree_size", BigInteger, nullable=False),
    Column("root_hash", LargeBinary, nullable=False),
    Column("origin", Text, nullable=False),
    Column("key_name", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("note", Text, nullable=False),
    # The tree's compact range at this size (perfect subtree roots, largest first, 32 bytes
    # each), so the next checkpoint hashes only the leaves added since.
    Column("tree_state", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    ForeignKeyConstraint(
        ["key_name", "key_id"], ["signing_keys.name", "signing_keys.key_id"], name="checkpoints_key_fkey"
    ),
)
Index("checkpoints_size_idx", checkpoints.c.tree_size, checkpoints.c.id)

# Resumable (tus) uploads under way (migration 0013): the offset and the owner live here, not
# beside the spooled file, so any API process can serve an upload's next request. An upload
# that completes names its import (later HEADs answer with it) until it expires.
tus_uploads = Table(
    "tus_uploads",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("token_id", UUID(as_uuid=True), ForeignKey("tokens.id", name="tus_uploads_token_fkey"), nullable=False),
    Column("lab", Text, ForeignKey("labs.name", name="tus_uploads_lab_fkey"), nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False, server_default=text("0")),
    # The Upload-Metadata header as sent, and the submission's fields decoded from it.
    Column("metadata", Text, nullable=False, server_default=text("''")),
    Column("fields", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("filename", Text),
    Column("idempotency_key", Text),
    Column("spool_path", Text, nullable=False),
    Column("import_id", UUID(as_uuid=True), ForeignKey("imports.id", name="tus_uploads_import_fkey")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("received >= 0 AND received <= length", name="tus_uploads_received_check"),
)
Index("tus_uploads_expires_idx", tus_uploads.c.expires_at)

# Signed-in browsers (ledger.web, migration 0014): the SHA-256 of the session's secret (the
# cookie holds the secret), the token it signed in with, checked on every request so that a
# revoked or expired token ends its sessions, and when the session itself expires.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("secret_hash", LargeBinary, nullable=False, unique=True),
    Column(
        "token_id",
        UUID(as_uuid=True),
        ForeignKey("tokens.id", name="web_sessions_token_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)
Index("web_sessions_token_idx", web_sessions.c.token_id)
Index("web_sessions_expires_idx", web_sessions.c.expires_at)

# Upstream sources (ledger.connectors, migration 0016): the validated definition, the
# schedule the worker runs it on (only if registered with `ledger connector add`), and the
# incremental cursor, moved only by the transaction that commits a sync's import.
connectors = Table(
    "connectors",
    metadata,
    Column("name", Text, primary_key=True),
    Column("lab", Text, ForeignKey("labs.name", name="connectors_lab_fkey"), nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("schedule", Text),
    Column("scheduled", Boolean, nullable=False, server_default=text("false")),
    Column(
        "created_by",
        UUID(as_uuid=True),
        ForeignKey("tokens.id", name="connectors_created_by_fkey", ondelete="SET NULL"),
    ),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("cursor", JSONB),
    Column("cursor_updated_at", DateTime(timezone=True)),
    Column("last_run_at", DateTime(timezone=True)),
)

# Every sync of a source, by a worker or by `ledger pull`: what it read, page by page, and
# the import it became.
connector_syncs = Table(
    "connector_syncs",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "connector",
        Text,
        ForeignKey("connectors.name", name="connector_syncs_connector_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("lab", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("import_id", UUID(as_uuid=True), ForeignKey("imports.id", name="connector_syncs_import_fkey")),
    Column("manifest_sha256", Text),
    Column("records", BigInteger, nullable=False, server_default=text("0")),
    Column("fetched", BigInteger, nullable=False, server_default=text("0")),
    Column("skipped", BigInteger, nullable=False, server_default=text("0")),
    Column("pages", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("errors", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("problems", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("cursor_from", Text),
    Column("cursor_to", JSONB),
    Column("requested_by", UUID(as_uuid=True)),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finished_at", DateTime(timezone=True)),
    CheckConstraint("origin IN ('worker', 'client')", name="connector_syncs_origin_check"),
    CheckConstraint("status IN ('running', 'ok', 'partial', 'failed')", name="connector_syncs_status_check"),
)
Index("connector_syncs_connector_idx", connector_syncs.c.connector, connector_syncs.c.started_at)
Index(
    "connector_syncs_import_idx",
    connector_syncs.c.import_id,
    postgresql_where=connector_syncs.c.import_id.isnot(None),
)

APPEND_ONLY_TABLES = (
    "ledger_batches",
    "ledger_entries",
    "import_rows",
    "quarantine_reviews",
    "batch_tree",
    "signing_keys",
    "checkpoints",
)
