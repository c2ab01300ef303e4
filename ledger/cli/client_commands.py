"""The arguments of `ledger submit` and `ledger checkpoint pull`, declared without importing the
client: httpx, stamina and rich load only when one of them runs (ledger.cli.client), so the
offline verifier keeps working with the core alone."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["CLIENT_ENVIRONMENT", "add_commands"]

CLIENT_ENVIRONMENT = (
    "environment: reads LEDGER_URL and LEDGER_TOKEN (else url and token from $XDG_CONFIG_HOME/ledger/config.toml, "
    "which must be mode 0600) and keeps its state under $XDG_STATE_HOME/ledger (default ~/.local/state/ledger); "
    "no database, no server setting."
)
_EXIT_CODES = (
    "exit codes (the worst over the files): 0 every row committed or duplicate, 3 done with quarantined rows, "
    "1 a failed import or another error (transient_failure included), 2 usage, 4 authentication or "
    "authorization, 130 interrupted."
)
_MIB = 1 << 20


def _lazy(name: str) -> Callable[[Any, argparse.Namespace], int]:
    def run(settings: Any, args: argparse.Namespace) -> int:
        from ledger.cli.client import COMMANDS

        return COMMANDS[name](settings, args)

    return run


def _positive(kind: Callable[[str], Any], least: float) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {raw!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="the server's base URL (default: LEDGER_URL, else url in the config file)")
    p.add_argument("--token", help="the bearer token (default: LEDGER_TOKEN, else token in the config file)")
    p.add_argument(
        "--max-wait",
        type=_positive(float, 0),
        default=300,
        help="seconds of waiting between retries, at most, per file (default: %(default)s)",
    )


def add_commands(sub: Any) -> None:
    """Register `submit`, `pull`, `connector` and `checkpoint pull` on the `ledger` argument parser."""
    p = sub.add_parser(
        "submit",
        help="upload manifest files (resumable, retried) and follow their imports; exit codes below",
        description="Uploads each FILE through the server's tus endpoint (POST /imports when it has none) "
        "and follows its import to the end. A re-run after a crash resumes the uploads. " + _EXIT_CODES,
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    _server_options(p)
    p.add_argument(
        "--chunk-size",
        type=_positive(int, 1),
        default=8 * _MIB,
        help="bytes per upload request; a crash re-sends at most one (default: %(default)s, 8 MiB)",
    )
    p.add_argument(
        "--parallel", type=_positive(int, 1), default=2, help="files delivered at once (default: %(default)s)"
    )
    p.add_argument("--policy", help="the policy to validate against (default: the server's, lab-inventory)")
    p.add_argument("--lab", help="the lab the files are for (default: the token's lab when it has one)")
    p.add_argument(
        "--idempotency-key",
        help="the key of the submission (default: the file's sha256; with --dry-run, sha256-dry-run)",
    )
    p.add_argument("--dry-run", action="store_true", help="validate the files, commit nothing")
    p.add_argument("--no-wait", action="store_true", help="return once uploaded, with the task id")
    p.add_argument("--json", action="store_true", help="print one JSON object per file, one per line")
    p.add_argument(
        "--receipt", metavar="DIR", help="save each import's receipt in DIR and check it offline (needs --public-key)"
    )
    p.add_argument(
        "--public-key", action="append", help="the pinned verifier key (or a file of keys) --receipt checks against"
    )
    p.set_defaults(func=_lazy("submit"), client=True)

    p = sub.add_parser(
        "pull",
        help="run a connector's sync from this machine and deliver it as one import; exit codes below",
        description="Reads the source definition FILE (TOML, docs/connectors.md), checks its map against the "
        "server's policy, fetches every page from the upstream from the source's saved cursor, records the sync "
        "and submits its records as one JSON Lines manifest (as `ledger submit` would). The upstream's secret is "
        "read from the variable the definition's auth_env names. "
        + _EXIT_CODES.replace("1 a failed", "5 a sync that ended partial (what it read is committed), 1 a failed"),
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="source definitions (TOML)")
    _server_options(p)
    p.add_argument("--no-wait", action="store_true", help="return once the manifest is uploaded, with the task id")
    p.add_argument("--json", action="store_true", help="print one JSON object per source, one per line")
    p.set_defaults(func=_lazy("pull"), client=True)

    connector = sub.add_parser("connector", help="upstream sources registered with the server")
    connector_sub = connector.add_subparsers(dest="connector_command", required=True)
    p = connector_sub.add_parser(
        "add",
        help="register a source definition (TOML) with the server; a worker then runs it on its schedule",
        description="Registers FILE (or replaces the definition of the source of that name, same lab). A worker "
        "runs it on its `schedule` (cron), one sync at a time; it needs the variable auth_env names. "
        "Exit 0 registered, 2 an invalid definition, 4 refused, 1 another error.",
    )
    p.add_argument("file", metavar="FILE")
    _server_options(p)
    p.add_argument("--json", action="store_true", help="print the registered source as JSON")
    p.set_defaults(func=_lazy("connector_add"), client=True)
    p = connector_sub.add_parser("list", help="the sources you may see, each with its latest sync")
    _server_options(p)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_lazy("connector_list"), client=True)
    p = connector_sub.add_parser("sync", help="start a sync of a registered source now, in a worker (officers, admins)")
    p.add_argument("name", metavar="NAME")
    _server_options(p)
    p.set_defaults(func=_lazy("connector_sync"), client=True)
    p = connector_sub.add_parser("syncs", help="a source's latest syncs: status, import, records, errors")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--limit", type=_positive(int, 1), default=10, help="how many (default: %(default)s)")
    _server_options(p)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_lazy("connector_syncs"), client=True)

    checkpoint = sub.add_parser("checkpoint", help="signed checkpoints of the server's ledger")
    checkpoint_sub = checkpoint.add_subparsers(dest="checkpoint_command", required=True)
    p = checkpoint_sub.add_parser(
        "pull",
        help="fetch the latest checkpoint, check it with the pinned key and against the last one verified",
        description="Keeps the last verified checkpoint per origin and key under $XDG_STATE_HOME/ledger; a "
        "smaller tree, another root at the same size or a failed consistency proof is refused (exit 1). "
        "Exit 4 when the token is refused, 2 on a usage error.",
    )
    _server_options(p)
    p.add_argument(
        "--public-key",
        action="append",
        required=True,
        help="the pinned verifier key <name>+<id>+<key>, or a file of them (repeatable); never the server's word",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_lazy("checkpoint_pull"), client=True)
