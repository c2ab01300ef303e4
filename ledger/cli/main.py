"""The `ledger` command: serve, worker, migrate, token, verify."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from ledger.config import VARIABLES, Settings
from ledger.core.roles import ROLES
from ledger.ingest.limits import manifest_rows_max

__all__ = ["main"]


def resolve_database(settings: Settings, *, stop_on_exit: bool = True) -> tuple[str, Any]:
    # Imported here: the offline commands must run with the core alone installed.
    from ledger.db.embedded import resolve_database as resolve

    return resolve(settings, stop_on_exit=stop_on_exit)


def _migrate(url: str) -> None:
    from ledger.db.migrate import upgrade

    upgrade(url)


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url, _handle = resolve_database(settings)
    _migrate(url)
    print("migrations applied")
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from ledger.api.app import create_app
    from ledger.cli.supervisor import Supervisor
    from ledger.core.policy.registry import PolicyRegistry
    from ledger.logs import get_logger
    from ledger.telemetry import tracing

    # The port first: a busy one stops start-up before the database, the workers or the
    # "listening" line exist (a second serve on the same home would otherwise start them all).
    try:
        listener = _listen(args.host, args.port)
    except OSError as exc:
        print(f"ledger serve: cannot listen on {args.host}:{args.port}: {_bind_failure(exc)}", file=sys.stderr)
        return 1
    try:
        # Then the policies: a malformed one stops start-up before anything else happens.
        policies = PolicyRegistry.load_dir(settings.policies_dir)
        url, embedded = resolve_database(settings)
        _migrate(url)
        admin = asyncio.run(_first_admin_token(url))
    except BaseException:
        listener.close()
        raise
    count = settings.workers if args.workers is None else args.workers
    supervisor = Supervisor(workers=count, env={**os.environ, "LEDGER_DATABASE_URL": url}, database=embedded)
    tracing.configure(tracing.API_SERVICE)  # before the app: its HTTP middleware is added only when on
    app = create_app(settings, url, policies=policies)
    host = f"[{args.host}]" if ":" in args.host else args.host
    where = f"http://{host}:{listener.getsockname()[1]}"
    log = get_logger("ledger.serve")
    try:
        supervisor.start()
        if admin:
            print(f"first start: an admin token was created (shown once):\n  {admin}", flush=True)
        print(f"ledger listening on {where}  (API schema: {where}/schema/swagger)", flush=True)
        # uvicorn handles SIGTERM and SIGINT itself (it finishes the requests in flight) and
        # re-raises the signal afterwards; as an interrupt that unwinds through this finally.
        with _terminate_as_interrupt():
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
            server.run(sockets=[listener])
    finally:
        listener.close()
        # Top down: the workers hand their imports back while the database is still up.
        with _terminate_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            log.info("serve_stopping", stage="serve")
            supervisor.stop()
            if embedded is not None:
                embedded.stop()
            log.info("serve_stopped", stage="serve")
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port (port 0: any free one), or OSError."""
    addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = addresses[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a port whose last server's connections linger in TIME_WAIT is free,
        # one that something listens on is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_failure(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the address is in use (by another `ledger serve` or another program); stop it or choose another --port"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges); choose another --port"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror}); check --host"
    return exc.strerror or str(exc)


async def _first_admin_token(url: str) -> str | None:
    """An admin token on a first start (no token at all yet), else None; when no admin token
    can authenticate any more, says how to make one rather than minting it unasked."""
    from ledger.db.pool import connect
    from ledger.db.tokens import any_admin, create_first_admin

    conn = await connect(url)
    try:
        token = await create_first_admin(conn, expires_in_days=Settings.from_env().token_ttl_days)
        if token is not None:
            await _audit_first_admin(conn, token)
        if token is None and not await any_admin(conn):
            print(
                "no admin token is valid (all revoked or expired); make one with `ledger token create --role admin`",
                file=sys.stderr,
                flush=True,
            )
        return token
    finally:
        await conn.close()


async def _audit_first_admin(conn: Any, token: str) -> None:
    """The admin token a first start mints is a token-created line (never its secret)."""
    from ledger import audit_log
    from ledger.db.tokens import find_token

    found = await find_token(conn, token)
    if found is not None:
        row = found.row
        target = audit_log.TargetUser(id=str(row.id), roles=[row.role], name=row.label)
        audit_log.emit(audit_log.event(audit_log.TOKEN_CREATED, target=target))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.cli.supervisor import follow_parent
    from ledger.jobs.worker import run_worker
    from ledger.telemetry import tracing

    follow_parent(os.environ)
    url, _handle = resolve_database(settings)
    tracing.configure(tracing.WORKER_SERVICE)
    # SIGTERM and SIGINT stop it gracefully: the running imports go back to the queue.
    return 0 if run_worker(settings, url) else 1


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.db.pool import connect
    from ledger.services import health

    url, _handle = resolve_database(settings)

    async def run() -> tuple[health.Readiness, health.WorkersReport | None]:
        try:
            conn = await connect(url)
        except Exception as exc:  # the database itself is what is wrong
            return health.Readiness(status="unavailable", code="database_unreachable", message=str(exc)), None
        try:
            ready = await health.readiness(conn, settings)
            report = await health.workers_report(conn, settings) if ready.code != "database_unreachable" else None
            return ready, report
        finally:
            await conn.close()

    ready, report = asyncio.run(run())
    if args.json:
        body: dict[str, Any] = {"ready": ready.ok, "readiness": msgspec.to_builtins(ready)}
        if report is not None:
            body.update({k: v for k, v in msgspec.to_builtins(report).items() if k != "ready"})
        print(msgspec.json.encode(body).decode())
    else:
        _print_status(ready, report)
    return 0 if ready.ok else 1


def _print_status(ready: Any, report: Any) -> None:
    print(f"ready: {'yes' if ready.ok else 'no'}" + ("" if ready.ok else f" ({ready.code}: {ready.message})"))
    if report is None:
        return
    q = report.queue
    print(f"queue: {q.queued} queued, {q.running} running, {q.retrying} retrying")
    print(f"workers ({len(report.workers)}; heartbeat timeout {report.heartbeat_timeout_seconds} s):")
    for w in report.workers:
        state = "alive" if w.alive else "stale"
        running = ", ".join(w.running) or "idle"
        print(f"  {w.hostname} pid {w.pid}  {state}, last heartbeat {w.last_heartbeat}  running: {running}")


class _terminate_as_interrupt:
    """SIGTERM (from a supervisor or a deploy) stops serve like Ctrl-C does."""

    def __enter__(self) -> None:
        self._old = signal.signal(signal.SIGTERM, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGTERM, self._old)


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.errors import InvalidRequest
    from ledger.services import tokens

    labs = args.lab or []
    days = settings.token_ttl_days if args.expires_in is None else (args.expires_in or None)
    try:
        # Checked before the database is touched: a wrong request starts nothing.
        tokens.check_grant(args.role, labs, days, args.label)
    except InvalidRequest as exc:
        print(f"ledger token create: {exc.message}", file=sys.stderr)
        return 2

    async def run(conn: Any) -> Any:
        return await tokens.create(conn, role=args.role, labs=labs, label=args.label, expires_in_days=days)

    try:
        created = _with_connection(settings, run)
    except InvalidRequest as exc:  # a lab that is not registered
        print(f"ledger token create: {exc.message}", file=sys.stderr)
        return 2
    expires = f", expires {_when(created.info.expires_at)}" if created.info.expires_at else ", never expires"
    print(
        f"created {created.info.role} token {created.info.id}"
        + (f" for labs {', '.join(created.info.labs)}" if created.info.labs else "")
        + expires,
        file=sys.stderr,
    )
    print(created.token)
    return 0


def _with_connection(settings: Settings, fn: Any) -> Any:
    """``fn(conn)`` on a connection to the service's database."""
    from ledger.db.pool import connect

    url, _handle = resolve_database(settings)

    async def run() -> Any:
        conn = await connect(url)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def _when(moment: Any) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.services import tokens

    found = _with_connection(settings, tokens.list_all)
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    heads = ("id", "role", "labs", "label", "created", "expires", "last used", "revoked")
    rows = [
        (
            str(t.id),
            t.role,
            ",".join(t.labs) or "-",
            t.label or "-",
            _when(t.created_at),
            "never" if t.expires_at is None else _when(t.expires_at),
            _when(t.last_used_at),
            _when(t.revoked_at),
        )
        for t in found
    ]
    widths = [max(len(c) for c in column) for column in zip(heads, *rows, strict=False)]
    for line in (heads, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.errors import NotFound
    from ledger.services import tokens

    try:
        info = _with_connection(settings, lambda conn: tokens.revoke(conn, args.id))
    except NotFound:
        print(f"ledger token revoke: no token {args.id}", file=sys.stderr)
        return 1
    print(f"revoked token {info.id} ({info.role}) at {_when(info.revoked_at)}")
    return 0


def cmd_token_rotate(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.errors import Conflict, NotFound
    from ledger.services import tokens

    try:
        created = _with_connection(settings, lambda conn: tokens.rotate(conn, args.id))
    except NotFound:
        print(f"ledger token rotate: no token {args.id}", file=sys.stderr)
        return 1
    except Conflict as exc:
        print(f"ledger token rotate: {exc.message}", file=sys.stderr)
        return 1
    print(f"token {args.id} is revoked; its replacement is {created.info.id} (shown once):", file=sys.stderr)
    print(created.token)
    return 0


def cmd_lab_add(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.errors import Conflict, InvalidRequest
    from ledger.services import labs

    try:
        # Checked before the database is touched: a wrong name starts nothing.
        labs.check_name(args.name)
        row = _with_connection(settings, lambda conn: labs.add(conn, args.name, args.title))
    except InvalidRequest as exc:
        print(f"ledger lab add: {exc.message}", file=sys.stderr)
        return 2
    except Conflict as exc:
        print(f"ledger lab add: {exc.message}", file=sys.stderr)
        return 1
    print(f"registered lab {row.name}")
    return 0


def cmd_lab_list(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.services import labs

    found = _with_connection(settings, lambda conn: labs.list_visible(conn, None))
    if args.json:
        print(msgspec.json.encode(found).decode())
        return 0
    for lab in found:
        print("  ".join((lab.name, _when(lab.created_at), lab.title or "")).rstrip())
    return 0


def _days(raw: str) -> int:
    """--expires-in: whole days, or 0 for 'none' (never)."""
    from ledger.config import parse_days

    try:
        return parse_days(raw, "--expires-in") or 0
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.db.pool import connect
    from ledger.db.verification import verify_ledger

    url, _handle = resolve_database(settings)

    async def run() -> Any:
        conn = await connect(url)
        try:
            return await verify_ledger(conn, database_url=url, workers=min(4, os.cpu_count() or 1))
        finally:
            await conn.close()

    report = asyncio.run(run())
    from ledger import audit_log

    audit_log.emit(audit_log.verification_event(report))
    print(msgspec.json.encode(report).decode())
    if report.ok:
        print(
            f"ledger intact: {report.batches_checked} batches, {report.records_checked} records verified",
            file=sys.stderr,
        )
        return 0
    failure = report.first_failure
    assert failure is not None
    where = f"batch {failure.batch_seq}" + ("" if failure.entry is None else f", entry {failure.entry}")
    print(f"LEDGER TAMPERED: {where}: {failure.reason}: {failure.detail}", file=sys.stderr)
    return 1


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from ledger.bench.manifest import write_manifest

    data_dir = Path(args.data_dir) if args.data_dir else settings.home / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)
    if args.generate_only:
        for rows in args.sizes:
            path = write_manifest(data_dir / f"manifest-{rows}.csv", rows)
            print(f"{path}  ({rows} rows, {path.stat().st_size} bytes)")
        return 0
    from ledger.bench.run import median_result, run_bench

    results = run_bench(args.rows, concurrent=args.concurrent, runs=args.runs, data_dir=data_dir)
    print(msgspec.json.encode(median_result(results)).decode())
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start the HTTP API and worker(s); embedded PostgreSQL by default")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=_whole(0, 65_535),
        default=8000,
        help="the port to listen on, 0 for any free one (default: %(default)s)",
    )
    serve.add_argument(
        "--workers",
        type=_whole(0),
        default=None,
        help="worker processes to run and supervise (default LEDGER_WORKERS or 1; 0: the API alone, "
        "with workers run elsewhere by `ledger worker`)",
    )
    serve.set_defaults(func=cmd_serve)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("worker", help="run one import worker").set_defaults(func=cmd_worker)

    status = sub.add_parser(
        "status", help="readiness, the workers and their heartbeats, the queue; exit 0 ready, 1 not"
    )
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.set_defaults(func=cmd_status)

    token = sub.add_parser("token", help="manage API tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a token; it is printed as the last line")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument(
        "--lab", action="append", help="a lab a lab_manager token acts for (repeatable; other roles act for every lab)"
    )
    create.add_argument("--label", help="a note on whom the token is for")
    create.add_argument(
        "--expires-in",
        type=_days,
        metavar="DAYS",
        help="days until the token expires, or 'none' for never (default LEDGER_TOKEN_TTL_DAYS or 90)",
    )
    create.set_defaults(func=cmd_token_create)
    listing = token_sub.add_parser(
        "list", help="every token: id, role, labs, label, created, expires, last used, revoked (never the secret)"
    )
    listing.add_argument("--json", action="store_true", help="print one JSON array")
    listing.set_defaults(func=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id (from `ledger token list`)")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_token_revoke)
    rotate = token_sub.add_parser(
        "rotate",
        help="a new secret for the same role, labs and label; the old one is revoked; printed as the last line",
    )
    rotate.add_argument("id")
    rotate.set_defaults(func=cmd_token_rotate)

    lab = sub.add_parser("lab", help="manage the lab registry (tokens and imports name registered labs only)")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True)
    lab_add = lab_sub.add_parser("add", help="register a lab")
    lab_add.add_argument("name", help="1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    lab_add.add_argument("--title", help="a readable name (default: none)")
    lab_add.set_defaults(func=cmd_lab_add)
    lab_list = lab_sub.add_parser("list", help="every registered lab: name, registered at, title")
    lab_list.add_argument("--json", action="store_true", help="print one JSON array")
    lab_list.set_defaults(func=cmd_lab_list)

    sub.add_parser("verify", help="recompute every hash of the ledger; exit 0 intact, 1 tampered").set_defaults(
        func=cmd_verify
    )

    bench = sub.add_parser("bench", help="import a synthetic manifest through the API and measure it")
    bench.add_argument(
        "--rows", type=_whole(1, _ROWS_MAX), default=100_000, help="rows of the manifest (default: %(default)s)"
    )
    bench.add_argument(
        "--concurrent",
        type=_whole(1),
        default=1,
        help="imports submitted at once, with one token: past LEDGER_UPLOADS_PER_TOKEN_MAX raise it "
        "(default: %(default)s)",
    )
    bench.add_argument("--runs", type=_whole(1), default=3, help="runs; the medians are printed (default: %(default)s)")
    bench.add_argument("--data-dir", help="where manifests are generated (default LEDGER_HOME/bench)")
    bench.add_argument("--generate-only", action="store_true", help="only write the sample manifests")
    bench.add_argument(
        "--sizes",
        type=_whole(1, _ROWS_MAX),
        nargs="+",
        default=list(_BENCH_SIZES),
        help=f"row counts for --generate-only (default: {' '.join(map(str, _BENCH_SIZES))})",
    )
    bench.set_defaults(func=cmd_bench)

    bench_audit = sub.add_parser("bench-audit", help="build a synthetic ledger and measure verification and proofs")
    bench_audit.add_argument(
        "--records", type=_whole(1), default=1_000_000, help="records in the synthetic ledger (default: %(default)s)"
    )
    bench_audit.add_argument(
        "--batch-rows", type=_whole(1), default=10_000, help="records per batch (default: %(default)s)"
    )
    bench_audit.add_argument(
        "--runs", type=_whole(1), default=3, help="runs of each measurement; medians are printed (default: %(default)s)"
    )
    bench_audit.add_argument(
        "--proofs", type=_whole(1), default=200, help="inclusion proofs requested per run (default: %(default)s)"
    )
    bench_audit.set_defaults(func=cmd_bench_audit)

    bench_ui = sub.add_parser(
        "bench-ui",
        help="serve 10,000 open quarantine items and time the officer's and auditor's pages (and, with "
        "Chromium, a filter change in the queue)",
    )
    bench_ui.add_argument(
        "--runs",
        type=_whole(1),
        default=3,
        help="runs, each on a fresh database; medians are printed (default: %(default)s)",
    )
    bench_ui.add_argument(
        "--samples", type=_whole(1), default=30, help="requests of each page per run (default: %(default)s)"
    )
    bench_ui.add_argument(
        "--changes", type=_whole(0), default=40, help="filter changes in the browser per run (default: %(default)s)"
    )
    bench_ui.set_defaults(func=cmd_bench_ui)

    bench_upload = sub.add_parser(
        "bench-upload",
        help="upload a manifest through the upload page in Chromium (MB/s, the API's peak RSS), with the network "
        "dropped half-way (bytes the server received), and through tuspy",
        description="Each run makes a fresh database beside the configured one (LEDGER_DATABASE_URL, or the "
        "embedded PostgreSQL under LEDGER_HOME), starts `ledger serve --workers 0` on 127.0.0.1 and drives "
        "Debian's Chromium (LEDGER_CHROMIUM, default /usr/bin/chromium) with Playwright; prints one JSON object.",
    )
    bench_upload.add_argument(
        "--runs",
        type=_whole(1),
        default=3,
        help="runs, each on a fresh database and server; medians are printed (default: %(default)s)",
    )
    bench_upload.add_argument(
        "--megabytes",
        type=_whole(1, 2_000),
        default=100,
        help="size of the large manifest, in MB of 10^6 bytes (default: %(default)s)",
    )
    bench_upload.add_argument(
        "--small-megabytes",
        type=_whole(1, 2_000),
        default=10,
        help="size of the small manifest, whose peak RSS is set beside the large one's (default: %(default)s)",
    )
    bench_upload.set_defaults(func=cmd_bench_upload)

    bench_load = sub.add_parser(
        "bench-load",
        help="lab managers uploading the 100,000-row sample while officers page the queue and auditors fetch "
        "proofs, through Locust; exit 1 when a threshold does not hold",
        description="Starts `ledger serve` on the loopback address, on a fresh embedded PostgreSQL under a temporary "
        "LEDGER_HOME (LEDGER_DATABASE_URL is not passed on), imports the sample once, then runs Locust headless "
        "for --duration seconds. Prints a table on stderr and one JSON object on stdout; exit 0 when every "
        "threshold holds (>= 50,000 rows/min, p95 of the non-import requests <= 300 ms, failure ratio <= 1%) "
        "and the chain verifies, 1 when not, 2 when it cannot run. Needs the extra: pip install -e '.[load]'.",
    )
    bench_load.add_argument(
        "--duration", type=_whole(10, 3600), default=120, help="seconds of load (default: %(default)s)"
    )
    bench_load.add_argument(
        "--host", default="127.0.0.1", help="loopback only: 127.0.0.1 or localhost (default: %(default)s)"
    )
    bench_load.add_argument("--managers", type=_whole(0), default=2, help="lab managers (default: %(default)s)")
    bench_load.add_argument("--officers", type=_whole(0), default=4, help="compliance officers (default: %(default)s)")
    bench_load.add_argument("--auditors", type=_whole(0), default=4, help="auditors (default: %(default)s)")
    for role, who, low, high in (
        ("manager", "a lab manager", 2, 5),
        ("officer", "an officer", 1, 3),
        ("auditor", "an auditor", 1, 3),
    ):
        bench_load.add_argument(
            f"--{role}-wait",
            type=float,
            nargs=2,
            default=[low, high],
            metavar=("MIN", "MAX"),
            help=f"seconds {who} waits between tasks, drawn evenly (default: {low} {high})",
        )
    bench_load.add_argument(
        "--samples",
        type=_whole(1, 200),
        default=30,
        help="distinct 100,000-row samples (10 MB each, written before the run) the uploads send in turn, so that "
        "each commits rows of its own; past them an upload sends one again, whose rows are then duplicates "
        "(default: %(default)s, about as many as two lab managers upload in 120 s)",
    )
    bench_load.set_defaults(func=cmd_bench_load)

    bench_pull = sub.add_parser(
        "bench-pull",
        help="`ledger pull` of a whole upstream (a local one with latency) timed end to end; exit 1 when a run "
        "went over max_in_flight or did not put every record on the ledger exactly once",
        description="Each run starts `ledger serve` on a fresh embedded PostgreSQL under a temporary LEDGER_HOME "
        "(LEDGER_DATABASE_URL is not passed on), the test upstream as a process on 127.0.0.1 (page-number "
        "pagination) and `ledger pull --json` as a process, timed from its start to the import's done. Prints "
        "each run on stderr and one JSON object (medians, [min, max] spreads, targets) on stdout. Exit 1 when a "
        "run went over max_in_flight or the ledger does not hold every record exactly once, 2 when it cannot run.",
    )
    bench_pull.add_argument(
        "--records", type=_whole(1, _ROWS_MAX), default=100_000, help="records upstream (default: %(default)s)"
    )
    bench_pull.add_argument(
        "--page-size", type=_whole(1, 1000), default=500, help="records per page (default: %(default)s)"
    )
    bench_pull.add_argument(
        "--latency", type=_seconds, default=0.02, help="seconds the upstream takes per page (default: %(default)s)"
    )
    bench_pull.add_argument(
        "--max-in-flight", type=_whole(1, 64), default=8, help="the source's max_in_flight (default: %(default)s)"
    )
    bench_pull.add_argument(
        "--runs", type=_whole(1), default=3, help="runs, each on a fresh server; medians (default: %(default)s)"
    )
    bench_pull.add_argument("--data-dir", help="where the temporary homes go (default LEDGER_HOME/bench)")
    bench_pull.set_defaults(func=cmd_bench_pull)

    bench_submit = sub.add_parser(
        "bench-submit",
        help="`ledger submit` of the sample manifest, timed to done beside `ledger bench`'s in-process figure for "
        "the same file, with the client's peak RSS for a small and a big file",
        description="Each run, on fresh embedded PostgreSQL servers (LEDGER_DATABASE_URL is not passed on): one "
        "`ledger bench` run of the --rows sample (the baseline), `ledger submit --json` of the same file as a "
        "process, timed from its start to the import's done, and of the --small-rows sample; the baseline and "
        "the client take turns going first. Prints each run on stderr and one JSON object on stdout. Exit 1 when "
        "the client's import did not commit, skip and quarantine what the baseline's did, 2 when it cannot run.",
    )
    bench_submit.add_argument(
        "--rows", type=_whole(1, _ROWS_MAX), default=1_000_000, help="rows of the big sample (default: %(default)s)"
    )
    bench_submit.add_argument(
        "--small-rows",
        type=_whole(1, _ROWS_MAX),
        default=100_000,
        help="rows of the small sample, whose peak RSS is set beside the big one's (default: %(default)s)",
    )
    bench_submit.add_argument(
        "--runs", type=_whole(1), default=3, help="paired runs; medians are printed (default: %(default)s)"
    )
    bench_submit.add_argument(
        "--data-dir", help="where the samples are (written when missing) and the homes go (default LEDGER_HOME/bench)"
    )
    bench_submit.set_defaults(func=cmd_bench_submit)

    from ledger.cli.offline import add_commands

    add_commands(sub)
    from ledger.cli.client_commands import add_commands as add_client_commands

    add_client_commands(sub)
    from ledger.cli.restore_drill import add_command as add_restore_drill

    add_restore_drill(sub)
    _describe_environment(parser)
    return parser


# The row counts `ledger bench --generate-only` writes, and the most a manifest may have.
_BENCH_SIZES = (10_000, 100_000, 1_000_000)
_ROWS_MAX = manifest_rows_max


def _whole(least: int, most: int | None = None) -> Callable[[str], int]:
    """An argument type: a whole number from ``least`` to ``most``."""

    def whole(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {raw!r}") from None
        if value < least or (most is not None and value > most):
            bounds = f"at least {least}" if most is None else f"from {least} to {most}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    return whole


def _seconds(raw: str) -> float:
    """An argument type: seconds from 0 to 60."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {raw!r}") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"must be from 0 to 60 seconds, got {raw}")
    return value


# What each command reads from the environment. Every command but the offline ones opens the
# service's database; and any of them refuses to start on a malformed LEDGER_* setting.
_DATABASE_VARIABLES = ("LEDGER_DATABASE_URL", "LEDGER_HOME", "LEDGER_LOG_LEVEL", "LEDGER_AUDIT_LOG")
_WORKER_VARIABLES = (
    *_DATABASE_VARIABLES,
    "LEDGER_POLICIES_DIR",
    "LEDGER_BATCH_ROWS",
    "LEDGER_IMPORTS_RUNNING_MAX",
    "LEDGER_IMPORT_CHUNK_ROWS",
    "LEDGER_IMPORT_PROCESSES",
    "LEDGER_IMPORT_PARALLEL_BYTES_MIN",
    "LEDGER_JOB_HEARTBEAT_TIMEOUT",
    "LEDGER_JOB_RETRY_ATTEMPTS",
    "LEDGER_JOB_RETRY_BASE_SECONDS",
    "LEDGER_JOB_RETRY_MAX_SECONDS",
    "LEDGER_SPOOL_RETENTION_SECONDS",
    "LEDGER_SIGNING_KEY_FILE",
    "LEDGER_CHECKPOINT_ORIGIN",
    "LEDGER_CHECKPOINT_INTERVAL_SECONDS",
)
_COMMAND_VARIABLES: dict[str, tuple[str, ...]] = {
    # serve runs the API and the workers; bench and bench-ui run serve with their own environment.
    "serve": VARIABLES,
    "bench": VARIABLES,
    "bench-ui": VARIABLES,
    "bench-upload": (*VARIABLES, "LEDGER_CHROMIUM"),
    # bench-load runs serve on an embedded PostgreSQL of its own whatever LEDGER_DATABASE_URL says.
    "bench-load": tuple(name for name in VARIABLES if name != "LEDGER_DATABASE_URL"),
    "bench-pull": tuple(name for name in VARIABLES if name != "LEDGER_DATABASE_URL"),
    "bench-submit": tuple(name for name in VARIABLES if name != "LEDGER_DATABASE_URL"),
    "worker": _WORKER_VARIABLES,
    "status": (*_DATABASE_VARIABLES, "LEDGER_JOB_HEARTBEAT_TIMEOUT"),
    "token create": (*_DATABASE_VARIABLES, "LEDGER_TOKEN_TTL_DAYS"),
}


def _describe_environment(parser: argparse.ArgumentParser, command: str = "") -> None:
    """An ``environment:`` paragraph at the end of every command's --help."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if parser.epilog is None:
        if not command:
            parser.epilog = "environment: each command's --help names the LEDGER_* variables it reads."
        elif groups:
            parser.epilog = "environment: each subcommand's --help names the LEDGER_* variables it reads."
        elif parser.get_default("offline"):
            parser.epilog = "environment: none; it needs no settings, database or server."
        elif parser.get_default("client"):
            from ledger.cli.client_commands import CLIENT_ENVIRONMENT

            parser.epilog = CLIENT_ENVIRONMENT
        else:
            names = _COMMAND_VARIABLES.get(command, _DATABASE_VARIABLES)
            parser.epilog = (
                f"environment: reads {', '.join(names)}; a malformed value of any LEDGER_* setting stops it."
            )
    for group in groups:
        for name, child in group.choices.items():
            _describe_environment(child, f"{command} {name}".strip())


def cmd_bench_audit(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.audit_paths import run_audit_bench

    # The bench builds and drops its own database beside this one; this one is not touched.
    url, _handle = resolve_database(settings)
    report = run_audit_bench(
        url, settings, records=args.records, batch_rows=args.batch_rows, runs=args.runs, proofs=args.proofs
    )
    print(msgspec.json.encode(report).decode())
    return 0


def cmd_bench_ui(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.ui_pages import run_ui_bench

    # Each run builds and drops its own database beside this one; this one is not touched.
    url, _handle = resolve_database(settings)
    report = run_ui_bench(url, settings.home, runs=args.runs, samples=args.samples, changes=args.changes)
    print(msgspec.json.encode(report).decode())
    return 0


def cmd_bench_upload(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.uploads import run_upload_bench

    # Each run builds and drops its own database beside this one; this one is not touched.
    url, _handle = resolve_database(settings)
    try:
        report = run_upload_bench(
            url, settings.home, runs=args.runs, megabytes=args.megabytes, small_megabytes=args.small_megabytes
        )
    except RuntimeError as exc:
        print(f"ledger bench-upload: {exc}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(report).decode())
    return 0


def cmd_bench_load(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.load import BenchLoadError, render_table, run_load_bench

    try:
        report = run_load_bench(
            settings.home,
            host=args.host,
            duration=args.duration,
            counts={"lab_manager": args.managers, "compliance_officer": args.officers, "auditor": args.auditors},
            waits={
                "lab_manager": tuple(args.manager_wait),
                "compliance_officer": tuple(args.officer_wait),
                "auditor": tuple(args.auditor_wait),
            },
            samples=args.samples,
        )
    except BenchLoadError as exc:
        print(f"ledger bench-load: {exc}", file=sys.stderr)
        return 2
    print(render_table(report), file=sys.stderr)
    print(msgspec.json.encode(report).decode())
    return 0 if report.passed and report.verified else 1


def _bench_dir(settings: Settings, args: argparse.Namespace) -> Path:
    data_dir = Path(args.data_dir) if args.data_dir else settings.home / "bench"
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o755)  # the embedded servers run as their own system user
    return data_dir.resolve()


def cmd_bench_pull(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.pull import run_pull_bench

    try:
        report = run_pull_bench(
            _bench_dir(settings, args),
            records=args.records,
            latency=args.latency,
            page_size=args.page_size,
            max_in_flight=args.max_in_flight,
            runs=args.runs,
        )
    except RuntimeError as exc:  # a server, the upstream or the pull that did not come to its end
        print(f"ledger bench-pull: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(report).decode())
    targets = report["targets"]
    return 0 if targets["in_flight_never_over_the_limit"] and targets["every_record_once"] else 1


def cmd_bench_submit(settings: Settings, args: argparse.Namespace) -> int:
    from ledger.bench.submit import run_submit_bench

    try:
        report = run_submit_bench(
            _bench_dir(settings, args), rows=args.rows, small_rows=args.small_rows, runs=args.runs
        )
    except RuntimeError as exc:  # a server or a submission that did not come to its end
        print(f"ledger bench-submit: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(report).decode())
    return 0 if report["targets"]["same_counts_as_bench"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "offline", False) or getattr(args, "client", False):
        # Offline verification and the HTTP client need no settings, logging or server package.
        offline_code: int = args.func(None, args)
        return offline_code
    from ledger.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings.log_level)
    if (refused := _open_audit_log(settings, args.command)) is not None:
        return refused
    from ledger.core.policy import PolicyError

    try:
        code: int = args.func(settings, args)
    except KeyboardInterrupt:
        code = 130
    except PolicyError as exc:
        # A broken policy is an operator's problem to fix, not a crash to debug.
        print(f"ledger: cannot start: {exc}", file=sys.stderr)
        code = 2
    return code


# Who writes a command's audit lines outside HTTP requests (docs/audit-log.md: event.provider).
_AUDIT_PROVIDERS = {"serve": "server", "worker": "worker"}


def _open_audit_log(settings: Settings, command: str) -> int | None:
    """The audit log for the SIEM (ledger.audit_log): serve and worker write it to stdout unless
    LEDGER_AUDIT_LOG says otherwise, a one-shot command to stderr (its stdout is its answer).
    A destination it cannot open stops the command (2) before it changes anything."""
    from ledger import audit_log

    default = "stdout" if command in _AUDIT_PROVIDERS else "stderr"
    try:
        audit_log.configure(settings.audit_log or default, provider=_AUDIT_PROVIDERS.get(command, "cli"))
    except (OSError, ValueError) as exc:
        print(f"ledger: cannot open the audit log (LEDGER_AUDIT_LOG={settings.audit_log}): {exc}", file=sys.stderr)
        return 2
    return None


if __name__ == "__main__":
    sys.exit(main())
