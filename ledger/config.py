"""Settings, read from the environment only when asked (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
from msgspec import field

__all__ = ["TOKEN_DAYS_MAX", "VARIABLES", "Settings", "parse_days"]

# The longest token lifetime that may be asked for (about a century), so a date never overflows.
TOKEN_DAYS_MAX = 36_500


def parse_days(raw: str, name: str) -> int | None:
    """A token lifetime in whole days, or None for ``none`` (never expires)."""
    if raw.strip().lower() in ("none", "never"):
        return None
    try:
        days = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of days or 'none', got {raw!r}") from None
    if not 1 <= days <= TOKEN_DAYS_MAX:
        raise ValueError(f"{name} must be between 1 and {TOKEN_DAYS_MAX} days (or 'none'), got {days}")
    return days


def _default_policies_dir() -> Path:
    """./policies when run from a checkout, else the policies shipped beside the package, so
    `ledger serve` works from any directory."""
    here = Path("policies")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "policies"


# The numeric settings and the variables they are read from.
_NUMBERS: tuple[tuple[str, str, type[int] | type[float]], ...] = (
    ("batch_rows_max", "LEDGER_BATCH_ROWS", int),
    ("upload_bytes_max", "LEDGER_UPLOAD_BYTES_MAX", int),
    ("workers", "LEDGER_WORKERS", int),
    ("imports_running_max", "LEDGER_IMPORTS_RUNNING_MAX", int),
    ("imports_queued_max", "LEDGER_IMPORTS_QUEUED_MAX", int),
    ("imports_queued_per_lab_max", "LEDGER_IMPORTS_QUEUED_PER_LAB_MAX", int),
    ("import_chunk_rows", "LEDGER_IMPORT_CHUNK_ROWS", int),
    ("import_processes", "LEDGER_IMPORT_PROCESSES", int),
    ("import_parallel_bytes_min", "LEDGER_IMPORT_PARALLEL_BYTES_MIN", int),
    ("job_heartbeat_timeout_seconds", "LEDGER_JOB_HEARTBEAT_TIMEOUT", int),
    ("job_retry_attempts", "LEDGER_JOB_RETRY_ATTEMPTS", int),
    ("job_retry_base_seconds", "LEDGER_JOB_RETRY_BASE_SECONDS", float),
    ("job_retry_max_seconds", "LEDGER_JOB_RETRY_MAX_SECONDS", float),
    ("spool_retention_seconds", "LEDGER_SPOOL_RETENTION_SECONDS", int),
    ("auth_failures_per_minute", "LEDGER_AUTH_FAILURES_PER_MINUTE", int),
    ("body_idle_seconds", "LEDGER_BODY_IDLE_SECONDS", float),
    ("body_min_bytes_per_second", "LEDGER_BODY_MIN_BYTES_PER_SECOND", int),
    ("body_rate_grace_seconds", "LEDGER_BODY_RATE_GRACE_SECONDS", float),
    ("uploads_per_token_max", "LEDGER_UPLOADS_PER_TOKEN_MAX", int),
    ("upload_expiry_seconds", "LEDGER_UPLOAD_EXPIRY_SECONDS", int),
    ("session_hours", "LEDGER_SESSION_HOURS", int),
    ("checkpoint_interval_seconds", "LEDGER_CHECKPOINT_INTERVAL_SECONDS", int),
    ("metrics_cache_seconds", "LEDGER_METRICS_CACHE_SECONDS", float),
)

# Every variable Settings.from_env reads (`ledger serve --help` names them all).
VARIABLES: tuple[str, ...] = (
    "LEDGER_DATABASE_URL",
    "LEDGER_HOME",
    "LEDGER_POLICIES_DIR",
    "LEDGER_LOG_LEVEL",
    "LEDGER_SIGNING_KEY_FILE",
    "LEDGER_CHECKPOINT_ORIGIN",
    "LEDGER_TOKEN_TTL_DAYS",
    "LEDGER_AUDIT_LOG",
    *(name for _, name, _ in _NUMBERS),
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # None means "start the embedded PostgreSQL under home/pgdata".
    database_url: str | None = None
    home: Path = Path(".ledger")
    policies_dir: Path = field(default_factory=lambda: _default_policies_dir())
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    # Committed rows per ledger batch (one Merkle root and one chain link each).
    batch_rows_max: int = 10_000
    upload_bytes_max: int = 2 * 1024**3
    # Backpressure: imports running at once (enforced by the queue across all workers),
    # and imports waiting, overall and per lab, beyond which submissions get 429.
    imports_running_max: int = 2
    imports_queued_max: int = 50
    imports_queued_per_lab_max: int = 10
    log_level: str = "info"
    # Staging: records validated, hashed and committed (with a checkpoint) per chunk; the
    # processes that share that CPU work (0: the worker itself, in a thread); and the file
    # size from which starting those processes pays off.
    import_chunk_rows: int = 5_000
    import_processes: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))
    import_parallel_bytes_min: int = 8 * 1024**2
    # A job whose worker sent no heartbeat for this long is picked up again by another worker.
    job_heartbeat_timeout_seconds: int = 30
    # Transient failures (a lost connection, a deadlock, PostgreSQL restarting) are retried from
    # the import's checkpoint: this many attempts in all, the n-th retry after a random wait of
    # up to base * 2^(n-1) seconds, capped (ledger.jobs.retry).
    job_retry_attempts: int = 5
    job_retry_base_seconds: float = 1.0
    job_retry_max_seconds: float = 60.0
    # Checkpoint signing key (C2SP note signer key); None means home/signing.key, generated on
    # first start. The origin line of checkpoints; None means the key's name.
    signing_key_file: Path | None = None
    checkpoint_origin: str | None = None
    # An upload is deleted from the spool as soon as its import ends (done, failed, cancelled);
    # with this many seconds it is kept that long, and the worker's spool janitor removes it.
    spool_retention_seconds: int = 0
    # Tokens expire this many days after they are made unless told otherwise (None: never).
    token_ttl_days: int | None = 90
    # Failed authentications (a token presented but unknown, revoked or expired) one client
    # address may make in a minute before it gets 429 until the minute is over, per API process.
    auth_failures_per_minute: int = 10
    # A request body that sends nothing for body_idle_seconds, or, once body_rate_grace_seconds
    # have been spent waiting for it, has averaged fewer than body_min_bytes_per_second (0: no
    # minimum) is answered 408: a client trickling bytes holds a connection and a spool file.
    body_idle_seconds: float = 30.0
    body_min_bytes_per_second: int = 1024
    body_rate_grace_seconds: float = 10.0
    # Uploads (POST /imports bodies) one token may send at once, per API process.
    uploads_per_token_max: int = 4
    # A resumable (tus) upload that receives nothing for this long expires (410), and the worker's
    # spool janitor deletes it; a completed one names its import for this long.
    upload_expiry_seconds: int = 86_400
    # How long a signed-in browser session (the pages under /ui/) lasts; the token it signed in
    # with must stay valid too.
    session_hours: int = 8
    # The worker signs a checkpoint of a head left unsigned this long (each commit signs its own;
    # this covers writers that could not), and GET /metrics exports it for the age alert.
    checkpoint_interval_seconds: int = 300
    # GET /metrics reads the database at most once per this many seconds (0: every scrape), so
    # that a tight scrape interval, or several scrapers, cannot load it.
    metrics_cache_seconds: float = 5.0
    # Where the audit log for the SIEM goes (ledger.audit_log, docs/audit-log.md): stdout, stderr,
    # off or a file path; None: stdout for serve and worker, stderr for one-shot commands.
    audit_log: str | None = None

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.home / "signing.key"

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        if url := env.get("LEDGER_DATABASE_URL"):
            values["database_url"] = url
        if home := env.get("LEDGER_HOME"):
            values["home"] = Path(home)
        if policies := env.get("LEDGER_POLICIES_DIR"):
            values["policies_dir"] = Path(policies)
        for key, name, number in _NUMBERS:
            if raw := env.get(name):
                try:
                    values[key] = number(raw)
                except ValueError as exc:
                    what = "a number of seconds" if number is float else "a whole number"
                    raise ValueError(f"{name} must be {what}, got {raw!r}") from exc
        if level := env.get("LEDGER_LOG_LEVEL"):
            values["log_level"] = level
        if key_file := env.get("LEDGER_SIGNING_KEY_FILE"):
            values["signing_key_file"] = Path(key_file)
        if origin := env.get("LEDGER_CHECKPOINT_ORIGIN"):
            values["checkpoint_origin"] = origin
        if ttl := env.get("LEDGER_TOKEN_TTL_DAYS"):
            values["token_ttl_days"] = parse_days(ttl, "LEDGER_TOKEN_TTL_DAYS")
        if audit := env.get("LEDGER_AUDIT_LOG"):
            values["audit_log"] = audit
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that contradict each other, naming the variable to change. The
        limits in code are checked against each other and these defaults by tests/test_limits.py."""
        for value, name in (
            (self.batch_rows_max, "LEDGER_BATCH_ROWS"),
            (self.import_chunk_rows, "LEDGER_IMPORT_CHUNK_ROWS"),
            (self.imports_running_max, "LEDGER_IMPORTS_RUNNING_MAX"),
            (self.imports_queued_max, "LEDGER_IMPORTS_QUEUED_MAX"),
            (self.imports_queued_per_lab_max, "LEDGER_IMPORTS_QUEUED_PER_LAB_MAX"),
            (self.upload_bytes_max, "LEDGER_UPLOAD_BYTES_MAX"),
            (self.job_heartbeat_timeout_seconds, "LEDGER_JOB_HEARTBEAT_TIMEOUT"),
            (self.job_retry_attempts, "LEDGER_JOB_RETRY_ATTEMPTS"),
            (self.auth_failures_per_minute, "LEDGER_AUTH_FAILURES_PER_MINUTE"),
            (self.uploads_per_token_max, "LEDGER_UPLOADS_PER_TOKEN_MAX"),
            (self.upload_expiry_seconds, "LEDGER_UPLOAD_EXPIRY_SECONDS"),
            (self.session_hours, "LEDGER_SESSION_HOURS"),
            (self.checkpoint_interval_seconds, "LEDGER_CHECKPOINT_INTERVAL_SECONDS"),
            (self.token_ttl_days or 1, "LEDGER_TOKEN_TTL_DAYS"),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not self.metrics_cache_seconds >= 0:
            raise ValueError(f"LEDGER_METRICS_CACHE_SECONDS must be 0 or more, got {self.metrics_cache_seconds}")
        if self.spool_retention_seconds < 0:
            raise ValueError(f"LEDGER_SPOOL_RETENTION_SECONDS must be 0 or more, got {self.spool_retention_seconds}")
        if not self.body_idle_seconds > 0:
            raise ValueError(f"LEDGER_BODY_IDLE_SECONDS must be more than 0, got {self.body_idle_seconds}")
        if self.body_min_bytes_per_second < 0 or not self.body_rate_grace_seconds >= 0:
            raise ValueError("LEDGER_BODY_MIN_BYTES_PER_SECOND and LEDGER_BODY_RATE_GRACE_SECONDS must be 0 or more")
        if self.workers < 0 or self.import_processes < 0:
            raise ValueError("LEDGER_WORKERS and LEDGER_IMPORT_PROCESSES must be 0 or more")
        if self.imports_queued_per_lab_max > self.imports_queued_max:
            raise ValueError("LEDGER_IMPORTS_QUEUED_PER_LAB_MAX must not exceed LEDGER_IMPORTS_QUEUED_MAX")
        if not 0 <= self.job_retry_base_seconds <= self.job_retry_max_seconds:
            raise ValueError("LEDGER_JOB_RETRY_BASE_SECONDS must be between 0 and LEDGER_JOB_RETRY_MAX_SECONDS")
