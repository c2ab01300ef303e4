"""/health: liveness, and readiness (database reachable, migrations at head)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency

from ledger.api.state import AppState
from ledger.db.migrate import head_revision

__all__ = ["HealthController"]


class HealthController(Controller):
    path = "/health"
    tags = ["health"]

    @get("/live", summary="The process is up")
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", summary="The database answers and its schema is at the latest migration")
    async def ready(self, ledger: NamedDependency[AppState]) -> Response[dict[str, Any]]:
        expected = head_revision()
        try:
            current = await ledger.db.fetchval("SELECT version_num FROM alembic_version")
        except Exception as exc:
            return Response(
                {"status": "unavailable", "code": "database_unreachable", "message": str(exc)},
                status_code=503,
            )
        if current != expected:
            return Response(
                {
                    "status": "unavailable",
                    "code": "migrations_pending",
                    "message": f"schema at {current}, code expects {expected}: run `ledger migrate`",
                },
                status_code=503,
            )
        return Response({"status": "ok", "migration": current}, status_code=200)
