"""`GET /health`: whether the server is ready to answer (public, for load balancers and monitors)."""

from __future__ import annotations

import msgspec
from litestar import Response, get

from mlx_fleet.router.fleet.calls import unavailable
from mlx_fleet.router.fleet.client import SupervisorUnavailable
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import error_responses
from mlx_fleet.router.router_state import FromApp, RouterState


class Health(msgspec.Struct):
    status: str


@get("/health", opt={"public": True}, responses=error_responses())
async def health(router: FromApp[RouterState]) -> Response[Health]:
    """Ready: the supervisor answers, the catalog is known and (with `wait_for_profile`) the
    startup profile's models are loaded."""
    try:
        failure = await router.fleet.ping(timeout=2.0)
    except SupervisorUnavailable as e:
        raise unavailable(e) from None
    if failure is not None:
        raise ApiError.from_failure(failure)
    if not router.catalog.loaded.is_set():
        raise ApiError(503, "The model catalog is not loaded yet.", code="catalog_loading")
    if router.admission.draining:
        raise ApiError(503, "The server is shutting down.", code="shutting_down")
    return as_json(Health(status="ok"))


ROUTES = [health]
