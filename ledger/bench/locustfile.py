"""The users of `ledger bench-load` (ledger.bench.load), as Locust user classes.

- ``LabManager`` uploads a 100,000-row sample manifest through the resumable upload server
  (``/uploads/``, tus 1.0, in chunks of the upload page's size), each under an idempotency key
  of its own so that every upload is a real import, then polls the import until it has ended.
  Each upload also counts as one request of type ``IMPORT``, from its first byte to the end
  of its import, failed unless the import ended ``done``.
- ``Officer`` pages the quarantine queue with its cursors and opens a few items of each page.
- ``Auditor`` proves entries (an asset's history, then the inclusion proof of its latest
  revision), fetches receipts of finished imports, the latest checkpoint and a consistency
  proof from an older tree size to it.

Importing this module imports Locust, which patches the standard library for gevent: only
the command imports it, first thing.
"""

from __future__ import annotations

import base64
import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from locust import HttpUser, User, between, task
from locust.clients import ResponseContextManager

__all__ = ["IMPORT", "IMPORT_GROUPS", "Auditor", "ImportRun", "LabManager", "Officer", "Plan", "bind"]

# The request type of the pseudo-request that stands for a whole import, upload to done.
IMPORT = "IMPORT"
TUS_VERSION = "1.0.0"
OFFSET_STREAM = "application/offset+octet-stream"
TERMINAL = ("done", "failed", "cancelled")
# The requests that carry or follow an import: not part of the latency threshold, which is about
# everyone else's experience while imports run.
UPLOAD_CREATE = "POST /uploads/"
UPLOAD_PATCH = "PATCH /uploads/{upload_id}"
IMPORT_POLL = "GET /imports/{task_id}"
IMPORT_DONE = "manifest, upload to end of import"
IMPORT_GROUPS = frozenset({UPLOAD_CREATE, UPLOAD_PATCH, IMPORT_POLL, IMPORT_DONE})


@dataclasses.dataclass
class ImportRun:
    """One upload and the import it became, as the lab manager saw them."""

    started: float  # time.monotonic() at the upload's first request
    ended: float
    status: str
    rows_total: int = 0
    rows_committed: int = 0
    rows_duplicate: int = 0
    rows_quarantined: int = 0


@dataclasses.dataclass
class Plan:
    """What the users share: the samples, a token per user, what auditors may ask about, and
    the imports so far. Greenlets switch only on I/O, so none of this needs a lock."""

    lab: str
    policy: str
    samples: list[Path]
    # Per role, one token per user of that role.
    tokens: dict[str, list[str]]
    # Asset ids on the ledger before the run (auditors prove their latest revisions).
    asset_ids: list[str]
    # Ids of imports that are done (auditors fetch their receipts); uploads add theirs.
    receipts: list[str]
    run_id: str
    chunk_bytes: int
    poll_seconds: float
    imports: list[ImportRun] = dataclasses.field(default_factory=list)
    # time.monotonic() at each upload's first request, finished or not.
    upload_starts: list[float] = dataclasses.field(default_factory=list)
    _handed: dict[str, int] = dataclasses.field(default_factory=dict)

    def token(self, role: str) -> str:
        """The next unused token of ``role``: each user its own, as people have."""
        n = self._handed.get(role, 0)
        self._handed[role] = n + 1
        return self.tokens[role][n % len(self.tokens[role])]

    def next_upload(self) -> tuple[int, Path, float]:
        """The next upload's number (1, 2, ...), its sample (each in turn, then round again) and
        when it starts."""
        started = time.monotonic()
        self.upload_starts.append(started)
        n = len(self.upload_starts)
        return n, self.samples[(n - 1) % len(self.samples)], started


def _metadata(values: dict[str, str]) -> str:
    """tus Upload-Metadata: comma-separated ``key base64(value)`` pairs."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def _failed(response: ResponseContextManager, expected: int) -> bool:
    """Marks the answer failed unless its status is ``expected``; whether it failed."""
    if response.status_code == expected:
        return False
    response.failure(f"status {response.status_code}, expected {expected}: {response.text[:200]}")  # type: ignore[no-untyped-call]
    return True


class _Role(HttpUser):
    """A user acting with a token of ``role``; the plan is bound per run (``bind``)."""

    abstract = True
    role: ClassVar[str] = ""
    plan: ClassVar[Plan]

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {self.plan.token(self.role)}"


class LabManager(_Role):
    """Uploads a sample, waits for its import to end, and after a pause uploads the next."""

    abstract = True
    role = "lab_manager"
    wait_time = between(2, 5)

    @task
    def upload_and_wait(self) -> None:
        number, path, started = self.plan.next_upload()
        import_url = self._upload(path, f"load-{self.plan.run_id}-{number}")
        if import_url is None:
            self._record(started, "upload_failed", {})
            return
        body: dict[str, Any] = {}
        while True:
            with self.client.get(import_url, name=IMPORT_POLL, catch_response=True) as response:
                if not _failed(response, 200):
                    body = response.json()
            if body.get("status") in TERMINAL:
                break
            time.sleep(self.plan.poll_seconds)
        if body["status"] == "done":
            self.plan.receipts.append(str(body["task_id"]))
        self._record(started, str(body["status"]), body)

    def _upload(self, path: Path, key: str) -> str | None:
        """The tus upload of ``path``; the URL of the import it became, or None if it failed."""
        size = path.stat().st_size
        metadata = {"filename": path.name, "policy": self.plan.policy, "lab": self.plan.lab, "idempotency_key": key}
        headers = {"Tus-Resumable": TUS_VERSION, "Upload-Length": str(size), "Upload-Metadata": _metadata(metadata)}
        with self.client.post("/uploads/", headers=headers, name=UPLOAD_CREATE, catch_response=True) as created:
            if _failed(created, 201):
                return None
            location = created.headers["Location"]
        offset, import_url = 0, None
        with path.open("rb") as fh:
            for chunk in _chunks(fh, self.plan.chunk_bytes):
                headers = {"Tus-Resumable": TUS_VERSION, "Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM}
                with self.client.patch(
                    location, data=chunk, headers=headers, name=UPLOAD_PATCH, catch_response=True
                ) as sent:
                    if _failed(sent, 204):
                        return None
                    offset = int(sent.headers["Upload-Offset"])
                    import_url = str(sent.headers.get("Ledger-Import") or "") or None
        if offset != size or import_url is None:
            return None
        return import_url

    def _record(self, started: float, status: str, body: dict[str, Any]) -> None:
        ended = time.monotonic()
        self.plan.imports.append(
            ImportRun(
                started=started,
                ended=ended,
                status=status,
                **{
                    k: int(body.get(k, 0))
                    for k in ("rows_total", "rows_committed", "rows_duplicate", "rows_quarantined")
                },
            )
        )
        self.environment.events.request.fire(
            request_type=IMPORT,
            name=IMPORT_DONE,
            response_time=(ended - started) * 1000,
            response_length=0,
            response=None,
            context={},
            exception=None if status == "done" else RuntimeError(f"the import ended {status}: {body.get('error')}"),
        )


def _chunks(fh: Any, size: int) -> Iterator[bytes]:
    while chunk := fh.read(size):
        yield chunk


class Officer(_Role):
    """Reads the queue a page after another, opening a couple of items on each."""

    abstract = True
    role = "compliance_officer"
    wait_time = between(1, 3)

    @task
    def page_the_queue(self) -> None:
        cursor: str | None = None
        for _ in range(random.randint(1, 4)):
            params: dict[str, str | int] = {"limit": 50}
            if cursor:
                params["cursor"] = cursor
            with self.client.get("/quarantine", params=params, name="GET /quarantine", catch_response=True) as page:
                if _failed(page, 200):
                    return
                body = page.json()
            for item in random.sample(body["items"], min(2, len(body["items"]))):
                self.client.get(f"/quarantine/{item['id']}", name="GET /quarantine/{item_id}")
            cursor = body["next"]
            if not cursor:
                return


class Auditor(_Role):
    """Proves entries, fetches receipts and checkpoints, and checks the log only grew."""

    abstract = True
    role = "auditor"
    wait_time = between(1, 3)

    @task(3)
    def prove_an_entry(self) -> None:
        asset_id = random.choice(self.plan.asset_ids)
        with self.client.get(
            f"/assets/{asset_id}/history", name="GET /assets/{asset_id}/history", catch_response=True
        ) as history:
            if _failed(history, 200):
                return
            entry_id = history.json()["revisions"][-1]["entry_id"]
        self.client.get(f"/audit/proofs/entries/{entry_id}", name="GET /audit/proofs/entries/{entry_id}")

    @task(2)
    def fetch_a_receipt(self) -> None:
        task_id = random.choice(self.plan.receipts)
        self.client.get(f"/imports/{task_id}/receipt", name="GET /imports/{task_id}/receipt")

    @task(1)
    def check_consistency(self) -> None:
        with self.client.get(
            "/audit/checkpoints/latest", name="GET /audit/checkpoints/latest", catch_response=True
        ) as latest:
            if _failed(latest, 200):
                return
            size = int(latest.json()["tree_size"])
        self.client.get(
            "/audit/proofs/consistency",
            params={"from": random.randint(1, size), "to": size},
            name="GET /audit/proofs/consistency",
        )


def bind(plan: Plan, counts: dict[str, int], waits: dict[str, tuple[float, float]]) -> list[type[User]]:
    """The user classes of one run: each sharing ``plan``, ``counts[role]`` users of each role
    (a role of 0 users is left out), waiting ``waits[role]`` (min, max seconds) between tasks."""
    classes: list[type[User]] = []
    for base in (LabManager, Officer, Auditor):
        if counts[base.role] <= 0:
            continue
        low, high = waits[base.role]
        attrs = {"abstract": False, "plan": plan, "fixed_count": counts[base.role], "wait_time": between(low, high)}
        classes.append(type(base.__name__, (base,), attrs))
    return classes
