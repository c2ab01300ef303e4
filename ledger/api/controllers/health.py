"""/health: liveness, readiness (database, migrations, a live worker), and the workers (admin)."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec

from ledger.api.guards import admins
from ledger.api.state import AppState
from ledger.services import health

__all__ = ["HealthController"]


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        summary="The database answers, its schema is at the latest migration, and a worker is alive",
        responses={503: ResponseSpec(health.Readiness, description="Not ready: the code says why")},
    )
    async def ready(self, ledger: NamedDependency[AppState]) -> Response[health.Readiness]:
        result = await health.readiness(ledger.db, ledger.settings)
        return Response(result, status_code=200 if result.ok else 503)

    @get(
        "/workers",
        summary="The workers, their last heartbeat and running imports, and the queue (admin)",
        guards=[admins],
    )
    async def workers(self, ledger: NamedDependency[AppState]) -> health.WorkersReport:
        return await health.workers_report(ledger.db, ledger.settings)
