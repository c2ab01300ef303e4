"""/ui/audit: the chain's head, the latest signed checkpoint and the public keys; verification of
the whole chain on demand; an asset's revisions, each with its inclusion proof to take away;
the export bundle; and how to check what was taken away offline. Through the services the
API's /audit and /assets answer with (ledger.services.verification, .audit_trail, .assets)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.response import Template

from ledger.errors import NotFound, Unavailable
from ledger.services import assets, audit_trail, verification
from ledger.web.nav import AUDIT
from ledger.web.pages import Page
from ledger.web.queue_filters import QueryText

__all__ = ["AuditPages", "age"]

# Where the pages' links take an auditor's downloads from: the API itself, with the session.
PROOF_PATH = "/audit/proofs/entries/{entry_id}"
EXPORT_PATH = "/audit/export"
_UNITS = ((86_400, "day"), (3_600, "hour"), (60, "minute"), (1, "second"))
# How long "Verify chain" waits for the report before it answers "verifying" and lets the page
# poll: a small ledger's report comes at once, a page request never waits for a large one.
VERIFY_WAIT_SECONDS = 0.05


def age(then: datetime, now: datetime | None = None) -> str:
    """How long ago, in the largest whole unit: "3 minutes"."""
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    for size, unit in _UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "0 seconds"


class AuditPages(Controller):
    path = "/audit"
    include_in_schema = False
    guards = [AUDIT.access]

    @get("/")
    async def audit(
        self, page: NamedDependency[Page], asset_id: QueryText = None, grant_code: QueryText = None
    ) -> Template:
        return await self._render(page, asset_id=(asset_id or "").strip(), grant_code=(grant_code or "").strip())

    @get("/verify")
    async def verify(self, page: NamedDependency[Page]) -> Template:
        """Start a verification (or join the running one). A small ledger's report is on this
        page at once; a large one's takes seconds, and the page says so and refreshes itself
        (/ui/audit/verification) instead of holding the request for all that time."""
        ledger = page.ledger
        task = verification.start(ledger.db, ledger.database_url)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), VERIFY_WAIT_SECONDS)
        return await self._render(page, verifying=verification.state(ledger.db))

    @get("/verification")
    async def verification_state(self, page: NamedDependency[Page]) -> Template:
        """The running verification, or the last one's report."""
        return await self._render(page, verifying=verification.state(page.ledger.db))

    async def _render(
        self,
        page: Page,
        *,
        verifying: verification.VerifyState | None = None,
        asset_id: str = "",
        grant_code: str = "",
    ) -> Template:
        assert page.principal is not None
        ledger = page.ledger
        head = await verification.head(ledger.db)
        try:
            checkpoint: audit_trail.StoredCheckpoint | None = await audit_trail.latest_checkpoint(
                ledger.db, ledger.signing
            )
        except Unavailable:  # no checkpoint yet, and no key here to sign one
            checkpoint = None
        keys = await audit_trail.public_keys(ledger.db, ledger.signing)
        search: dict[str, Any] = {"asset_id": asset_id, "grant_code": grant_code, "history": None, "error": None}
        if asset_id:
            try:
                search["history"] = await assets.asset_history(ledger.db, page.principal, asset_id, grant_code or None)
            except NotFound as exc:
                search["error"] = exc
        current = next((k for k in keys if k.current), keys[0] if keys else None)
        return page.render(
            "audit.html",
            title=AUDIT.title,
            head=head,
            checkpoint=checkpoint,
            checkpoint_age=age(checkpoint.created_at) if checkpoint else None,
            keys=keys,
            key=current.verifier_key if current else "KEY",
            report=None if verifying is None or verifying.running else verifying.report,
            verifying=verifying is not None and verifying.running,
            verified_at=None if verifying is None else verifying.finished_at,
            search=search,
            proof_path=PROOF_PATH,
            export_path=EXPORT_PATH,
        )
