"""The restore drill (`ledger restore-drill`, docs/runbook.md) against a real source server.

The source is an embedded PostgreSQL of this module's own: base backups need a replication
connection, which the system server the other tests may share does not allow, and a cluster of
our own keeps the backups small and the test self-contained. Its ledger gets real imports
through the app; an auditor keeps a checkpoint; then a tar-format backup is taken without WAL,
more is committed, and the WAL is archived as archive_command would, once as of the backup and
once after the later commits.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.cli.main import main
from ledger.cli.restore_drill import DrillFailed, check_against_kept, find_binaries, unpack_backup
from ledger.config import Settings
from ledger.core.checkpoint import parse_body, sign_checkpoint
from ledger.core.note import Signer, Verifier
from ledger.db.embedded import database_on, start_embedded
from ledger.db.migrate import upgrade
from ledger.db.pool import connect
from ledger.testing import running_api
from ledger.testing.checkout import POLICIES_DIR, ROOT
from ledger.testing.databases import run_admin

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
# The backup the drill restores with --backup: tar format, its WAL left to the archive.
_TAR_WITHOUT_WAL = ("--format", "tar", "--wal-method", "none", "--checkpoint", "fast")


@dataclass(frozen=True)
class Source:
    url: str
    home: Path
    public_key: str
    kept_early: Path  # the auditor's checkpoint before the backup
    kept_late: Path  # the auditor's checkpoint after commits the backup does not hold
    backup: Path  # tar format, without WAL
    archive_at_backup: Path  # the WAL archive as it was when the backup ended
    archive_later: Path  # the WAL archive once the later commits are in it
    run_as: list[str]  # --run-as, when this runs as root (the account the source runs as)


async def _history(settings: Settings, url: str, server_url: str, pgdata: Path, root: Path) -> str:
    """Imports, the auditor's checkpoints, the backup and the WAL archives, in the order the
    module docstring tells; returns the current verifier key."""
    clean = (ROOT / "examples" / "clean-manifest.csv").read_bytes()
    dirty = (ROOT / "examples" / "dirty-manifest.csv").read_bytes()
    bin_dir = find_binaries(int((pgdata / "PG_VERSION").read_text()), None, ("postgres", "pg_basebackup"))
    async with running_api(settings, url) as api:

        async def commit(content: bytes, key: str) -> None:
            done = await api.run(content, headers={"Idempotency-Key": key})
            assert done["status"] == "done", done

        async def keep(note: Path) -> None:  # as `ledger checkpoint pull` keeps it: the signed note
            note.write_text((await api.get("/audit/checkpoints/latest", role="auditor")).json()["note"])

        await commit(clean, "first")
        await commit(dirty, "second")
        await keep(root / "kept-early.note")
        subprocess.run(
            [str(bin_dir / "pg_basebackup"), "-d", server_url, "-D", str(root / "backup"), *_TAR_WITHOUT_WAL],
            check=True,
            capture_output=True,
        )
        _archive(pgdata, root / "archive-at-backup", await _current_segment(url, switch=False))
        await commit(clean, "third")
        await keep(root / "kept-late.note")
        _archive(pgdata, root / "archive-later", await _current_segment(url, switch=True))
        return str((await api.get("/audit/public-key", role="auditor")).json()[0]["verifier_key"])


async def _current_segment(url: str, switch: bool) -> str:
    conn = await connect(url)
    try:
        if switch:  # complete the segment the last commits are in, as the archiver would see it
            await conn.execute("SELECT pg_switch_wal()")
        return str(await conn.fetchval("SELECT pg_walfile_name(pg_current_wal_lsn())"))
    finally:
        await conn.close()


def _archive(pgdata: Path, into: Path, current: str) -> None:
    """What archive_command would have copied by now: every completed segment."""
    into.mkdir()
    for segment in (pgdata / "pg_wal").iterdir():
        if _SEGMENT.match(segment.name) and segment.name < current:
            shutil.copyfile(segment, into / segment.name)
            (into / segment.name).chmod(0o644)  # readable by the account the scratch server runs as


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    root = tmp_path_factory.mktemp("drill-source")
    pgdata = root / "pgdata"
    server_url, handle = start_embedded(pgdata, stop_on_exit=True)
    try:
        # A throwaway source: its commits and the backup's checkpoint need not reach the disk.
        asyncio.run(run_admin(server_url, "ALTER SYSTEM SET fsync = off", "SELECT pg_reload_conf()"))
        asyncio.run(run_admin(server_url, 'CREATE DATABASE "ledger"'))
        url = database_on(server_url, "ledger")
        upgrade(url)
        settings = Settings(database_url=url, home=root / "home", policies_dir=POLICIES_DIR)
        key = asyncio.run(_history(settings, url, server_url, pgdata, root))
        yield Source(
            url=url,
            home=settings.home,
            public_key=key,
            kept_early=root / "kept-early.note",
            kept_late=root / "kept-late.note",
            backup=root / "backup",
            archive_at_backup=root / "archive-at-backup",
            archive_later=root / "archive-later",
            run_as=["--run-as", pgdata.owner()] if os.geteuid() == 0 else [],
        )
    finally:
        handle.stop()


def _drill(source: Source, *args: str | Path) -> list[str]:
    """`ledger restore-drill` with ``args``, the auditor's pinned key and, as root, --run-as."""
    return ["restore-drill", *map(str, args), "--public-key", source.public_key, *source.run_as]


def _size(note: Path) -> int:
    return parse_body(note.read_text().split("\n\n")[0] + "\n", where="test").size


def _leftovers(output: str) -> Path:
    found = re.search(r"restore drill in (\S+)", output)
    assert found, output
    return Path(found.group(1))


def test_a_fresh_base_backup_restores_verifies_and_extends_the_kept_checkpoint(source: Source) -> None:
    """The drill as an operator runs it: its own process, a base backup of the live server."""
    env = {**os.environ, "LEDGER_DATABASE_URL": source.url, "LEDGER_HOME": str(source.home)}
    done = subprocess.run(
        [sys.executable, "-m", "ledger.cli.main", *_drill(source, "--checkpoint", source.kept_early)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    lines = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith("restore drill")}
    assert "pg_basebackup of PostgreSQL" in lines["base"]
    # The embedded server's wheel ships a pg_verifybackup for PostgreSQL 18 that cannot run.
    assert re.search(r"pg_verifybackup: every file|skipped: no working pg_verifybackup", lines["check"]), out
    assert re.search(r"ledger verify\s+\d+\.\d\d s  exit 0: ledger intact: \d+ batches", out), out
    early, late = _size(source.kept_early), _size(source.kept_late)
    assert f"the restored tree of size {late} extends the auditor's checkpoint of size {early}" in out
    assert re.search(r"^total\s+\d+\.\d\d s$", out, re.M), out
    assert "RESTORE DRILL PASSED" in out
    assert not _leftovers(out).exists()


def test_a_kept_backup_replays_the_wal_archive_up_to_the_latest_checkpoint(
    source: Source, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The tar backup holds no WAL: the archive makes it whole, and carries the commits after it."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", source.url)
    code = main(
        _drill(
            source, "--backup", source.backup, "--wal-archive", source.archive_later, "--checkpoint", source.kept_late
        )
    )
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "tar-format backup" in out.out and "WAL replayed from the WAL archive" in out.out, out.out
    late = _size(source.kept_late)
    assert f"the restored tree of size {late} extends the auditor's checkpoint of size {late}" in out.out


def test_a_backup_older_than_the_auditors_checkpoint_fails_the_drill(
    source: Source, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restored without the later WAL, the ledger verifies but lacks batches auditors have seen."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", source.url)
    code = main(
        _drill(
            source,
            "--backup",
            source.backup,
            "--wal-archive",
            source.archive_at_backup,
            "--checkpoint",
            source.kept_late,
        )
    )
    out = capsys.readouterr()
    assert code == 1, out.out + out.err
    assert re.search(r"ledger verify\s+\d+\.\d\d s  exit 0", out.out), out.out
    early, late = _size(source.kept_early), _size(source.kept_late)
    assert (
        f"RESTORE DRILL FAILED at consistency: the restored ledger's latest checkpoint has {early} batches, "
        f"the auditor's {late}: this backup predates" in out.err
    )
    assert re.search(r"^stop scratch\s+\d", out.out, re.M), out.out
    assert not _leftovers(out.out).exists()


async def test_a_forged_checkpoint_of_the_same_key_is_not_extended(source: Source) -> None:
    """A kept checkpoint whose root the ledger never had: the consistency proof cannot hold."""
    signer = Signer.parse((source.home / "signing.key").read_text())
    kept = parse_body(source.kept_early.read_text().split("\n\n")[0] + "\n", where="test")
    forged = sign_checkpoint(type(kept)(origin=kept.origin, size=kept.size, root=bytes(32)), signer)
    keys = [Verifier.parse(source.public_key)]
    assert "extends the auditor's checkpoint" in await check_against_kept(
        source.url, source.kept_early.read_text(), keys
    )
    with pytest.raises(DrillFailed, match=r"consistency failed at checkpoint \d+ -> \d+: the newer tree does not"):
        await check_against_kept(source.url, forged, keys)


def test_only_a_base_backup_is_restored(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DrillFailed, match="neither a plain-format backup"):
        unpack_backup(tmp_path / "empty", tmp_path / "data")
    tablespaces = tmp_path / "tablespaces"
    tablespaces.mkdir()
    for name in ("base.tar", "16385.tar"):
        (tablespaces / name).write_bytes(b"")
    with pytest.raises(DrillFailed, match=r"tablespace archives \(16385.tar\) are not supported"):
        unpack_backup(tablespaces, tmp_path / "data")


def test_binaries_of_another_major_version_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DrillFailed, match=r"no PostgreSQL 9 binaries .* pass --pg-bin DIR"):
        find_binaries(9, None)
