"""SIGTERM to `ledger serve` mid-import (a normal deploy) stops the whole tree, leaving nothing
behind, and hands the running import back to the queue: the next start resumes it and it ends
`done` with the content of an uninterrupted run."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lifecycle.conftest import IMPORT_ENV, IMPORT_SECONDS_MAX, ServerFactory
from tests.lifecycle.helpers import (
    STAGING,
    assert_ledger_whole,
    create_token,
    describe,
    submit,
    wait_all_dead,
    wait_import,
)

pytestmark = pytest.mark.lifecycle

# The import is back in the queue when serve starts again: picked at once, then about 5 s.
RESUME_SECONDS_MAX = 40


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_mid_staging_leaves_no_process_and_restart_resumes_to_done(
    servers: ServerFactory, manifest: Path, reference: dict[str, Any], tmp_path: Path, sig: signal.Signals
) -> None:
    home = tmp_path / "home"
    server = servers(env=IMPORT_ENV, home=home)
    manager_token = create_token(server.env, "lab_manager", "chem-lab")
    auditor_token = create_token(server.env, "auditor")
    manager = server.client(manager_token)
    task_id = submit(manager, manifest)
    wait_import(
        manager,
        task_id,
        lambda b: b["status"] in STAGING and 0 < b["bytes_read"] < b["manifest_bytes"],
        IMPORT_SECONDS_MAX,
    )
    # Everything of the old tree: serve, its worker(s) and their staging processes, the
    # embedded postmaster and its backends.
    tree = server.remember()
    print("tree at the signal:", describe(tree))
    postmaster = server.postmaster()
    assert postmaster is not None
    assert server.worker_processes(), "no worker below serve"
    assert len(postmaster.children()) > 0
    server.signal(sig)
    started = time.monotonic()
    code = server.wait_exit(timeout=30)
    print(f"serve stopped by {sig.name} in {time.monotonic() - started:.1f} s with exit code {code}")
    # Nothing of the old tree outlives serve (a moment's grace for the last exits to land).
    left = wait_all_dead(tree, 2)
    assert not left, describe(left)

    again = servers(env=IMPORT_ENV, home=home, name="restart")
    manager = again.client(manager_token)
    body = wait_import(manager, task_id, lambda b: b["status"] == "done", RESUME_SECONDS_MAX)
    assert body["error"] is None, body
    assert_ledger_whole(again, again.client(auditor_token), task_id, reference)
