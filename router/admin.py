"""`/admin/*`: the fleet's status, and loading and unloading models by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from mlx_fleet.state import db
from mlx_fleet.protocol import (
    Call,
    FleetStatus,
    GetStatus,
    HealthStatus,
    LoadModel,
    LoadResult,
    Reply,
    UnloadModel,
    UnloadResult,
)
from mlx_fleet.router.errors import ApiError
from mlx_fleet.router.fleet_client import FleetClient, SupervisorUnavailable
from mlx_fleet.router.openapi import error_responses

T = TypeVar("T")

# A load waits for the model to be ready; that can take minutes for a big model.
LOAD_CALL_TIMEOUT = 3600.0


async def in_db(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(connection, *args)` on the state database, in a thread: the event loop never waits on disk."""
    return await asyncio.to_thread(db.call, state.db_path, fn, *args)


async def ask(state: State, call: Call, result: type[T], timeout: float | None = None) -> T:
    """One admin call; its result checked against the type the supervisor promised."""
    client: FleetClient = state.fleet
    try:
        reply: Reply = await client.call(call, timeout)
    except SupervisorUnavailable as e:
        raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
    if reply.failure is not None:
        raise ApiError.from_failure(reply.failure)
    return msgspec.convert(reply.result, result)


async def fleet_status(state: State, timeout: float = 2.0) -> FleetStatus | None:
    """The supervisor's status, or None when it does not answer (for figures that can go without)."""
    client: FleetClient = state.fleet
    try:
        reply = await client.call(GetStatus(), timeout=timeout)
    except SupervisorUnavailable:
        return None
    return msgspec.convert(reply.result, FleetStatus)


def as_json(body: msgspec.Struct, status_code: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status_code, media_type="application/json")


@get("/admin/models/status", responses=error_responses())
async def models_status(state: State) -> Response[FleetStatus]:
    return as_json(await ask(state, GetStatus(), FleetStatus))


# Model ids may be Hugging Face repo ids: `POST /admin/models/load/mlx-community/Qwen3-4B-4bit`.
@post("/admin/models/load/{model_id:path}", status_code=200, responses=error_responses(404))
async def load_model(state: State, model_id: FromPath[Path]) -> Response[LoadResult]:
    return as_json(await ask(state, LoadModel(str(model_id).strip("/")), LoadResult, LOAD_CALL_TIMEOUT))


@post("/admin/models/unload/{model_id:path}", status_code=200, responses=error_responses(404))
async def unload_model(state: State, model_id: FromPath[Path], force: FromQuery[bool] = False) -> Response[UnloadResult]:
    unload = UnloadModel(str(model_id).strip("/"), force)
    return as_json(await ask(state, unload, UnloadResult, LOAD_CALL_TIMEOUT))


@get("/admin/health", responses=error_responses())
async def admin_health(state: State) -> Response[HealthStatus]:
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
