"""`GET /health`: whether the server is ready to answer (public, for load balancers and monitors)."""

from __future__ import annotations

import msgspec
from litestar import Response, get
from litestar.datastructures import State

from mlx_fleet.router.fleet.calls import unavailable
from mlx_fleet.router.fleet.client import SupervisorUnavailable
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.http.openapi import error_responses


class Health(msgspec.Struct):
    status: str


@get("/health", opt={"public": True}, responses=error_responses())
async def health(state: State) -> Response[Health]:
    """Ready: the supervisor answers, the catalog is known and (with `wait_for_profile`) the
    startup profile's models are loaded."""
    try:
        failure = await state.fleet.ping(timeout=2.0)
    except SupervisorUnavailable as e:
        raise unavailable(e) from None
    if failure is not None:
        raise ApiError.from_failure(failure)
    if not state.catalog.loaded.is_set():
        raise ApiError(503, "The model catalog is not loaded yet.", code="catalog_loading")
    if state.admission.draining:
        raise ApiError(503, "The server is shutting down.", code="shutting_down")
    return as_json(Health(status="ok"))


ROUTES = [health]
