"""`/admin/models/status|load|unload` and `/admin/health`: the fleet's status, and loading and
unloading models by hand."""

from __future__ import annotations

from pathlib import Path

import msgspec
from litestar import Response, get, post
from litestar.params import FromPath, FromQuery

from mlx_fleet.protocol import FleetStatus, GetStatus, HealthStatus, LoadModel, LoadResult, UnloadModel, UnloadResult
from mlx_fleet.router.admin.common import LOAD_CALL_TIMEOUT
from mlx_fleet.router.fleet.calls import ask
from mlx_fleet.router.fleet.client import SupervisorUnavailable
from mlx_fleet.router.http.encoding import as_json
from mlx_fleet.router.http.openapi import error_responses
from mlx_fleet.router.router_state import FromApp, RouterState


@get("/admin/models/status", responses=error_responses())
async def models_status(router: FromApp[RouterState]) -> Response[FleetStatus]:
    return as_json(await ask(router.fleet, GetStatus(), FleetStatus))


# Model ids may be Hugging Face repo ids: `POST /admin/models/load/mlx-community/Qwen3-4B-4bit`.
@post("/admin/models/load/{model_id:path}", status_code=200, responses=error_responses(404))
async def load_model(router: FromApp[RouterState], model_id: FromPath[Path]) -> Response[LoadResult]:
    return as_json(await ask(router.fleet, LoadModel(str(model_id).strip("/")), LoadResult, LOAD_CALL_TIMEOUT))


@post("/admin/models/unload/{model_id:path}", status_code=200, responses=error_responses(404))
async def unload_model(router: FromApp[RouterState], model_id: FromPath[Path],
                       force: FromQuery[bool] = False) -> Response[UnloadResult]:
    unload = UnloadModel(str(model_id).strip("/"), force)
    return as_json(await ask(router.fleet, unload, UnloadResult, LOAD_CALL_TIMEOUT))


@get("/admin/health", responses=error_responses())
async def admin_health(router: FromApp[RouterState]) -> Response[HealthStatus]:
    """`healthy` (the design documents' word), `degraded` while a model shows `failed`."""
    try:
        reply = await router.fleet.call(GetStatus(), timeout=2.0)
    except SupervisorUnavailable as e:
        return as_json(HealthStatus(status="unavailable", supervisor="unreachable", workers={}, reason=str(e)), 503)
    status = msgspec.convert(reply.result, FleetStatus)
    workers = {m.id: m.state for m in status.models}
    failed = any(v == "failed" for v in workers.values())
    return as_json(HealthStatus(status="degraded" if failed else "healthy", supervisor="ok", workers=workers))


ROUTES = [models_status, load_model, unload_model, admin_health]
