"""`/admin/*`: the fleet's status, and loading and unloading models by hand."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from mlx_fleet.protocol import (
    FleetStatus,
    GetStatus,
    HealthStatus,
    LoadModel,
    LoadResult,
    Reply,
    UnloadModel,
    UnloadResult,
)
from router.errors import ApiError
from router.fleet_client import FleetClient, SupervisorUnavailable

T = TypeVar("T")

# A load waits for the model to be ready; that can take minutes for a big model.
LOAD_CALL_TIMEOUT = 3600.0


async def ask(state: State, call, result: type[T], timeout: float | None = None) -> T:
    """One admin call; its result checked against the type the supervisor promised."""
    client: FleetClient = state.fleet
    try:
        reply: Reply = await client.call(call, timeout)
    except SupervisorUnavailable as e:
        raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
    if reply.failure is not None:
        raise ApiError.from_failure(reply.failure)
    return msgspec.convert(reply.result, result)


def as_json(body: msgspec.Struct, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status_code, media_type="application/json")


@get("/admin/models/status")
async def models_status(state: State) -> Response:
    return as_json(await ask(state, GetStatus(), FleetStatus))


# Model ids may be Hugging Face repo ids: `POST /admin/models/load/mlx-community/Qwen3-4B-4bit`.
@post("/admin/models/load/{model_id:path}", status_code=200)
async def load_model(state: State, model_id: FromPath[Path]) -> Response:
    return as_json(await ask(state, LoadModel(str(model_id).strip("/")), LoadResult, LOAD_CALL_TIMEOUT))


@post("/admin/models/unload/{model_id:path}", status_code=200)
async def unload_model(state: State, model_id: FromPath[Path], force: FromQuery[bool] = False) -> Response:
    unload = UnloadModel(str(model_id).strip("/"), force)
    return as_json(await ask(state, unload, UnloadResult, LOAD_CALL_TIMEOUT))


@get("/admin/health")
async def admin_health(state: State) -> Response:
    """`healthy` (the design documents' word), `degraded` while a model shows `failed`."""
    client: FleetClient = state.fleet
    try:
        reply = await client.call(GetStatus(), timeout=2.0)
    except SupervisorUnavailable as e:
        return as_json(HealthStatus(status="unavailable", supervisor="unreachable", workers={}, reason=str(e)), 503)
    status = msgspec.convert(reply.result, FleetStatus)
    workers = {m.id: m.state for m in status.models}
    failed = any(v == "failed" for v in workers.values())
    return as_json(HealthStatus(status="degraded" if failed else "healthy", supervisor="ok", workers=workers))


ROUTES = [models_status, load_model, unload_model, admin_health]
