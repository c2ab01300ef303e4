"""Settings, read from the environment only when asked (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
from msgspec import field

__all__ = ["Settings"]


def _default_policies_dir() -> Path:
    """./policies when run from a checkout, else the policies shipped beside the package, so
    `ledger serve` works from any directory."""
    here = Path("policies")
    if here.is_dir():
        return here
    return Path(__file__).resolve().parent.parent / "policies"


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
    # Checkpoint signing key (C2SP note signer key); None means home/signing.key, generated on
    # first start. The origin line of checkpoints; None means the key's name.
    signing_key_file: Path | None = None
    checkpoint_origin: str | None = None

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
        for key, name in (
            ("batch_rows_max", "LEDGER_BATCH_ROWS"),
            ("upload_bytes_max", "LEDGER_UPLOAD_BYTES_MAX"),
            ("workers", "LEDGER_WORKERS"),
            ("imports_running_max", "LEDGER_IMPORTS_RUNNING_MAX"),
            ("imports_queued_max", "LEDGER_IMPORTS_QUEUED_MAX"),
            ("imports_queued_per_lab_max", "LEDGER_IMPORTS_QUEUED_PER_LAB_MAX"),
            ("import_chunk_rows", "LEDGER_IMPORT_CHUNK_ROWS"),
            ("import_processes", "LEDGER_IMPORT_PROCESSES"),
            ("import_parallel_bytes_min", "LEDGER_IMPORT_PARALLEL_BYTES_MIN"),
            ("job_heartbeat_timeout_seconds", "LEDGER_JOB_HEARTBEAT_TIMEOUT"),
        ):
            if raw := env.get(name):
                try:
                    values[key] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc
        if level := env.get("LEDGER_LOG_LEVEL"):
            values["log_level"] = level
        if key_file := env.get("LEDGER_SIGNING_KEY_FILE"):
            values["signing_key_file"] = Path(key_file)
        if origin := env.get("LEDGER_CHECKPOINT_ORIGIN"):
            values["checkpoint_origin"] = origin
        values.update(overrides)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.batch_rows_max < 1:
            raise ValueError("LEDGER_BATCH_ROWS must be at least 1")
        if settings.import_chunk_rows < 1:
            raise ValueError("LEDGER_IMPORT_CHUNK_ROWS must be at least 1")
        if settings.job_heartbeat_timeout_seconds < 1:
            raise ValueError("LEDGER_JOB_HEARTBEAT_TIMEOUT must be at least 1 (seconds)")
        return settings
