"""What `ledger serve` runs beside its API: worker processes and the embedded PostgreSQL,
each restarted when it dies, and all stopped in order when serve stops.

A worker that exits unexpectedly (the OOM killer's kill -9, a crash, losing the database) is
started again after a back-off that grows while it keeps dying young (0.5 s doubling to 30 s;
a process that lived a minute starts again from 0.5 s), and each exit and restart is logged.
The embedded postmaster is watched the same way and started again on its own data.

Stopping goes top down: the workers get SIGTERM and hand their running imports back to the
queue (ledger.jobs.worker), then the database stops. Each worker also has the kernel tell it
to stop if serve itself dies (follow_parent), so a killed serve leaves no worker behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ledger.logs import get_logger

__all__ = ["PARENT_ENV", "Backoff", "Supervisor", "follow_parent"]

log = get_logger("ledger.supervisor")

# How often the children are looked at; a restart follows a death within this plus the back-off.
_POLL_SECONDS = 0.5
# A worker asked to stop hands its imports back within a second or two (a cancel and a small
# write); past this it is killed, and the queue re-picks its job after the heartbeat timeout.
_STOP_GRACE_SECONDS = 20.0
_PR_SET_PDEATHSIG = 1


class Backoff:
    """Restart delays: ``first`` doubling to ``cap`` while a process keeps dying within
    ``healthy_after`` seconds of its start; reset once it has run that long."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, healthy_after: float = 60.0) -> None:
        self.first, self.cap, self.healthy_after = first, cap, healthy_after
        self._failures = 0

    def next_delay(self, lived_seconds: float) -> float:
        if lived_seconds >= self.healthy_after:
            self._failures = 0
        delay = min(self.cap, self.first * float(2**self._failures))
        self._failures += 1
        return delay


# Set in a worker's environment to serve's pid: the worker then follows it (follow_parent).
PARENT_ENV = "LEDGER_SUPERVISOR_PID"


def follow_parent(env: Mapping[str, str]) -> None:
    """In a worker that serve started: have the kernel send SIGTERM when serve dies (Linux's
    PR_SET_PDEATHSIG), so a killed serve leaves no worker running on without it."""
    parent = env.get(PARENT_ENV)
    if not parent:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own stop still applies
        return
    if os.getppid() != int(parent):  # serve died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


class _Worker:
    def __init__(self, index: int, argv: list[str], env: Mapping[str, str]) -> None:
        self.name = f"worker-{index}"
        self.argv, self.env = argv, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restart_at: float | None = None
        self.restarts = 0
        self.backoff = Backoff()

    def spawn(self) -> None:
        self.proc = subprocess.Popen(self.argv, env={**self.env, PARENT_ENV: str(os.getpid())})
        self.started = time.monotonic()
        self.restart_at = None


class Supervisor:
    """Starts ``workers`` worker processes and watches them (and ``database``, when given: an
    embedded server handle with ``alive()`` and ``restart()``) from a thread of its own."""

    def __init__(
        self,
        *,
        workers: int,
        env: Mapping[str, str],
        database: Any | None = None,
        argv: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        command = argv or [sys.executable, "-m", "ledger.cli.main", "worker"]
        self._workers = [_Worker(i + 1, command, env) for i in range(workers)]
        self._database = database
        self._database_backoff = Backoff()
        self._database_down_since: float | None = None
        self._database_retry_at = 0.0
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ledger-supervisor", daemon=True)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.poll() is None]

    def start(self) -> None:
        for worker in self._workers:
            worker.spawn()
            log.info("process_started", stage="supervisor", process="worker", name=worker.name, pid=worker.proc.pid)  # type: ignore[union-attr]
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(_POLL_SECONDS):
            try:
                if self._database is not None:
                    self._watch_database()
                for worker in self._workers:
                    self._watch_worker(worker)
            except Exception:  # the watcher must outlive whatever one look at a child raises
                log.exception("supervisor_error", stage="supervisor")

    def _watch_worker(self, worker: _Worker) -> None:
        now = self._clock()
        proc = worker.proc
        if proc is not None and worker.restart_at is None:
            code = proc.poll()
            if code is None:
                return
            lived = now - worker.started
            delay = worker.backoff.next_delay(lived)
            worker.restart_at = now + delay
            log.warning(
                "process_exited",
                stage="supervisor",
                process="worker",
                name=worker.name,
                pid=proc.pid,
                returncode=code,
                lived_seconds=round(lived, 1),
                restart_in_seconds=delay,
            )
        if worker.restart_at is not None and now >= worker.restart_at and not self._stopping.is_set():
            old = proc.pid if proc is not None else None
            worker.spawn()
            worker.restarts += 1
            assert worker.proc is not None
            log.warning(
                "process_restarted",
                stage="supervisor",
                process="worker",
                name=worker.name,
                pid=worker.proc.pid,
                previous_pid=old,
                restarts=worker.restarts,
            )

    def _watch_database(self) -> None:
        assert self._database is not None
        if self._database.alive():
            self._database_down_since = None
            return
        now = self._clock()
        if self._database_down_since is None:
            self._database_down_since = now
            self._database_retry_at = now
            log.warning("process_exited", stage="supervisor", process="postgres")
        if now < self._database_retry_at:
            return
        try:
            self._database.restart()
        except Exception as exc:
            # Backends of a killed postmaster hold its shared memory until they notice; the
            # next try usually finds them gone.
            delay = self._database_backoff.next_delay(0.0)
            self._database_retry_at = now + delay
            log.warning(
                "process_restart_failed",
                stage="supervisor",
                process="postgres",
                error=str(exc)[:500],
                retry_in_seconds=delay,
            )
            return
        down = round(self._clock() - self._database_down_since, 1)
        self._database_down_since = None
        self._database_backoff = Backoff()
        log.warning("process_restarted", stage="supervisor", process="postgres", down_seconds=down)

    def stop(self, grace_seconds: float = _STOP_GRACE_SECONDS) -> None:
        """Stop watching, then stop the workers: SIGTERM, and SIGKILL for any still there after
        ``grace_seconds``. The database is the caller's to stop, after this."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        running = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        for proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("process_killed", stage="supervisor", process="worker", pid=proc.pid)
                proc.kill()
                proc.wait(timeout=5)
        log.info("workers_stopped", stage="supervisor", count=len(running))
