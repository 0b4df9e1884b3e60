"""`GET /metrics`: Prometheus text format, from prometheus_client (the series: `http.usage_metrics`).

A scrape first flushes the usage queue, so a scrape right after a request counts it, and reads
the supervisor's status for the fleet's own figures.
"""

from __future__ import annotations

from litestar import Response, get
from prometheus_client import generate_latest

from mlx_fleet.router.admin.common import fleet_status
from mlx_fleet.router.router_state import FromApp, RouterState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@get("/metrics", opt={"metrics": True}, media_type=CONTENT_TYPE)
async def metrics(router: FromApp[RouterState]) -> Response[str]:
    await router.usage.written()
    router.metrics.fleet.status = await fleet_status(router.fleet)
    return Response(generate_latest(router.metrics.registry), media_type=CONTENT_TYPE)


ROUTES = [metrics]
