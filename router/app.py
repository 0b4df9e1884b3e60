"""The HTTP face of the fleet: a Litestar app that validates, forwards over ZeroMQ, and frames SSE.

It never imports MLX. This module only assembles the app: each API's package exports its
`ROUTES`, and the app holds one typed `RouterState` that handlers receive as `router`. Request
bodies are read raw and decoded with msgspec in one pass, so validation errors can be worded like
OpenAI's and nothing is parsed twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from mlx_fleet.config import FleetConfig
from mlx_fleet.protocol import Failure
from mlx_fleet.router import admin, anthropic, dashboard, health, http, openai, responses
from mlx_fleet.router.auth.security import Guard, host_check_factory
from mlx_fleet.router.fleet.catalog_view import CatalogView
from mlx_fleet.router.fleet.client import FleetClient
from mlx_fleet.router.http.admission import Admission
from mlx_fleet.router.http.errors import ApiError, api_error_handler, http_error_handler, internal_error_handler
from mlx_fleet.router.http.openapi import ClosedStructs, document_streams, openapi_config
from mlx_fleet.router.http.usage import UsageWriter, state_db_lifespan, usage_middleware_factory
from mlx_fleet.router.http.usage_metrics import RequestMetrics
from mlx_fleet.router.inputs.images import ImagePolicy
from mlx_fleet.router.router_state import KEY, RouterState
from mlx_fleet.runtime import Endpoints
from mlx_fleet.state import db
from mlx_fleet.state.keys import KeyIndex

log = logging.getLogger("mlx_fleet.router")

ROUTES = [*openai.ROUTES, *responses.ROUTES, *anthropic.ROUTES, *health.ROUTES, *http.ROUTES, *admin.ROUTES,
          *dashboard.ROUTES]


def create_app(
    config: FleetConfig,
    endpoints: Endpoints,
    started: float,
    supervisor_alive: Callable[[], bool] | None = None,
    watch_interval: float = 0.2,
    client: FleetClient | None = None,
) -> Litestar:
    """`supervisor_alive` lets the router fail fast (503) instead of waiting on a dead supervisor;
    `client` stands in for the ZeroMQ connection to `endpoints` (the tests' fake fleet)."""
    server = config.server
    state_dir = Path(server.state_dir).expanduser()
    request_metrics = RequestMetrics()
    usage = UsageWriter(state_dir, float(config.usage.retention), observers=[request_metrics.observe])
    key_index = KeyIndex(db.db_path(state_dir))
    guard = Guard(server, key_index)
    router = RouterState(
        config=config, started=started, catalog=CatalogView(config, started),
        admission=Admission(server.max_requests_per_model, server.max_requests),
        images=ImagePolicy(max_dimension=server.image_max_dimension, allow_urls=server.image_urls,
                           allowed_hosts=tuple(server.image_allowed_hosts)),
        db_path=db.db_path(state_dir), usage=usage, metrics=request_metrics, sessions=guard.sessions)
    host_check = host_check_factory(server)
    return Litestar(
        route_handlers=ROUTES,
        lifespan=[state_db_lifespan(usage, key_index),
                  _fleet_lifespan(router, endpoints, client, supervisor_alive, watch_interval)],
        on_startup=[document_streams],
        state=State({KEY: router}),
        dependencies=router.dependency(),
        guards=[guard],
        middleware=[usage_middleware_factory(usage.queue), *([host_check] if host_check else [])],
        cors_config=CORSConfig(allow_origins=server.cors_origins) if server.cors_origins else None,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
        request_max_body_size=int(server.max_body_size),
        openapi_config=openapi_config(),
        plugins=[ClosedStructs()],
    )


def _fleet_lifespan(router: RouterState, endpoints: Endpoints, given: FleetClient | None,
                    supervisor_alive: Callable[[], bool] | None, watch_interval: float):
    """The app's lifespan part for the fleet: the connection to the supervisor (the catalog is
    fetched through it until the supervisor answers), and a watch on the supervisor's process."""

    async def watch(client: FleetClient, alive: Callable[[], bool]) -> None:
        while alive():
            await asyncio.sleep(watch_interval)
        log.error("the supervisor process has exited")
        client.fail_all(Failure("supervisor_unavailable", "The model server's supervisor has stopped.", 503))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = router.fleet = given or FleetClient(endpoints.frontend, endpoints.sink)
        client.start()
        watcher = None
        if supervisor_alive is not None:
            watcher = asyncio.create_task(watch(client, supervisor_alive), name="supervisor-watch")
        catalog = asyncio.create_task(router.catalog.keep_fetching(client), name="catalog-fetch")
        try:
            yield
        finally:
            for task in (watcher, catalog):
                if task is not None:
                    task.cancel()
            await client.close()

    return lifespan


def begin_drain(app: Litestar, drain_timeout: float) -> None:
    """SIGTERM: refuse new requests now; after `drain_timeout`, end the ones still running cleanly
    (an error event, then the end of the stream) so that uvicorn can finish its shutdown."""
    router = RouterState.of(app)
    if router.admission.draining:
        return
    router.admission.draining = True
    log.info("draining: no new requests; in-flight ones have %.0f s to finish", drain_timeout)

    def end_the_rest() -> None:
        client = router.fleet
        if client.streams:
            log.warning("drain timeout: ending %d request(s)", len(client.streams))
        client.fail_all(Failure("shutting_down", "The server is shutting down.", 503))

    asyncio.get_running_loop().call_later(drain_timeout, end_the_rest)
