"""The `ledger` command's arguments: what --help says (every default, every LEDGER_* variable a
command reads), what is refused before anything starts, and `ledger serve` on a busy port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.cli.main import _parser, main
from ledger.config import VARIABLES
from ledger.testing.checkout import POLICIES_DIR, ROOT

# Options whose default is the option being absent, which no help needs to spell out.
_FLAGS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction, argparse._VersionAction)


def _commands(parser: argparse.ArgumentParser, name: str = "ledger") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, child in action.choices.items():
                yield from _commands(child, f"{name} {sub}")


def _help(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_help().split())  # argparse wraps lines anywhere between words


COMMANDS = dict(_commands(_parser()))


def test_every_command_is_walked() -> None:
    assert {"ledger serve", "ledger token create", "ledger bench", "ledger verify-proof"} <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_every_default(command: str) -> None:
    parser = COMMANDS[command]
    text = _help(parser)
    for action in parser._actions:
        if isinstance(action, _FLAGS) or action.default in (None, argparse.SUPPRESS):
            continue
        shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
        assert f"default: {shown}" in text, f"{command} {action.option_strings}: default {shown} not in --help"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_names_the_environment(command: str) -> None:
    parser = COMMANDS[command]
    text = _help(parser)
    assert "environment:" in text
    leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
    if leaf and parser.get_default("client"):
        # The HTTP client reads where the server is and its token, never the database.
        assert "LEDGER_URL" in text and "LEDGER_TOKEN" in text and "LEDGER_DATABASE_URL" not in text
    elif leaf and not parser.get_default("offline"):
        # Every command that is not an offline check or the client opens the service's database.
        assert "LEDGER_DATABASE_URL" in text and "LEDGER_HOME" in text


def test_serve_help_names_every_setting() -> None:
    text = _help(COMMANDS["ledger serve"])
    assert [name for name in VARIABLES if name not in text] == []
    assert "LEDGER_BODY_IDLE_SECONDS" in text and "LEDGER_UPLOADS_PER_TOKEN_MAX" in text


def test_commands_name_what_they_read() -> None:
    assert "LEDGER_TOKEN_TTL_DAYS" in _help(COMMANDS["ledger token create"])
    assert "LEDGER_JOB_HEARTBEAT_TIMEOUT" in _help(COMMANDS["ledger status"])
    assert "LEDGER_IMPORT_CHUNK_ROWS" in _help(COMMANDS["ledger worker"])
    assert "environment: none" in _help(COMMANDS["ledger verify-bundle"])
    assert "LEDGER_CHROMIUM" in _help(COMMANDS["ledger bench-upload"])


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--port", "-1"],
        ["serve", "--port", "65536"],
        ["serve", "--port", "http"],
        ["serve", "--workers", "-1"],
        ["bench", "--rows", "0"],
        ["bench", "--rows", "100000000000"],
        ["bench", "--concurrent", "0"],
        ["bench", "--runs", "-3"],
        ["bench", "--generate-only", "--sizes", "10", "-5"],
        ["bench-audit", "--records", "-1"],
        ["bench-audit", "--batch-rows", "0"],
        ["bench-audit", "--runs", "0"],
        ["bench-audit", "--proofs", "-10"],
        ["bench-ui", "--runs", "0"],
        ["bench-ui", "--samples", "0"],
        ["bench-ui", "--changes", "-1"],
        ["bench-upload", "--runs", "0"],
        ["bench-upload", "--megabytes", "0"],
        ["bench-upload", "--small-megabytes", "2001"],
    ],
)
def test_counts_out_of_range_are_refused(args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as refused:
        _parser().parse_args(args)
    assert refused.value.code == 2
    assert "must be" in err.getvalue() or "expected a whole number" in err.getvalue()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--role", "admin", "--lab", "x"], "only a lab_manager token names labs"),
        (["--role", "compliance_officer", "--lab", "chem-lab"], "only a lab_manager token names labs"),
        (["--role", "lab_manager", "--lab", ""], "non-empty"),
        (["--role", "lab_manager", "--lab", "chem\x1b[31m-lab"], "printable"),
        (["--role", "lab_manager", "--lab", "chem\nlab"], "printable"),
        (["--role", "lab_manager", "--lab", " chem-lab"], "surrounding space"),
        (["--role", "auditor", "--label", "ana\x07"], "printable"),
    ],
)
async def test_token_create_refuses_labs_and_labels_it_cannot_use(
    args: list[str], says: str, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.setenv("LEDGER_HOME", str(tmp_path))

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["token", "create", *args])
        return code, out.getvalue(), err.getvalue()

    code, out, err = await asyncio.to_thread(run)
    assert (code, out) == (2, "")
    assert says in err


def test_serve_on_a_busy_port_fails_before_starting_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    # No LEDGER_DATABASE_URL: a serve that got past the port would start an embedded
    # PostgreSQL under home/pgdata.
    env.update({"LEDGER_HOME": str(home), "LEDGER_POLICIES_DIR": str(POLICIES_DIR), "PYTHONUNBUFFERED": "1"})
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "ledger.cli.main", "serve", "--port", str(port), "--workers", "1"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"ledger serve: cannot listen on 127.0.0.1:{port}: the address is in use" in done.stderr
    assert "listening" not in done.stdout and "admin token" not in done.stdout
    assert "process_started" not in done.stderr  # no worker
    assert not (home / "pgdata").exists()  # no PostgreSQL
