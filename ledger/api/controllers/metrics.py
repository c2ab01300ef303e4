"""GET /metrics: the Prometheus text exposition (ledger.services.metrics; docs/metrics.md).

Public on the API's port, as Prometheus expects: every figure is an aggregate (counts, ages,
durations) and no label names an id, a path or a lab. Out of the OpenAPI schema: it is not a
JSON operation of the API.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from ledger.services.metrics import MEDIA_TYPE, Metrics

__all__ = ["metrics_route"]


def metrics_route(metrics: Metrics) -> HTTPRouteHandler:
    """The scrape handler of one app, over that app's metrics."""

    @get("/metrics", include_in_schema=False, media_type=MEDIA_TYPE)
    async def scrape() -> Response[bytes]:
        return Response(await metrics.scrape(), media_type=MEDIA_TYPE)

    return scrape
