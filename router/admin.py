"""`/admin/*`: the fleet's status, and loading and unloading models by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from mlx_fleet import statedb
from mlx_fleet.protocol import Call, GetStatus, LoadModel, Reply, UnloadModel
from router.errors import ApiError
from router.fleet_client import FleetClient, SupervisorUnavailable
from router.openapi import error_responses

# A load waits for the model to be ready; that can take minutes for a big model.
LOAD_CALL_TIMEOUT = 3600.0
T = TypeVar("T")


async def in_db(state: State, fn: Callable[..., T], *args: Any) -> T:
    """`fn(connection, *args)` on the state database, in a thread: the event loop never waits on disk."""
    return await asyncio.to_thread(statedb.call, state.db_path, fn, *args)


async def supervisor_call(state: State, call: Call, timeout: float | None = None) -> Any:
    """An admin call's result, or its failure (or the supervisor's absence) as an ApiError."""
    client: FleetClient = state.fleet
    try:
        reply: Reply = await client.call(call, timeout)
    except SupervisorUnavailable as e:
        raise ApiError(503, f"The model server is not available: {e}", code="supervisor_unavailable") from None
    if reply.failure is not None:
        raise ApiError.from_failure(reply.failure)
    return reply.result


async def _call(state: State, call: Call, timeout: float | None = None) -> Response:
    return Response(msgspec.json.encode(await supervisor_call(state, call, timeout)), media_type="application/json")


@get("/admin/models/status", responses=error_responses())
async def models_status(state: State) -> Response:
    return await _call(state, GetStatus())


@post("/admin/models/load/{model_id:str}", status_code=200, responses=error_responses(404))
async def load_model(state: State, model_id: FromPath[str]) -> Response:
    return await _call(state, LoadModel(model_id), LOAD_CALL_TIMEOUT)


@post("/admin/models/unload/{model_id:str}", status_code=200, responses=error_responses(404))
async def unload_model(state: State, model_id: FromPath[str], force: FromQuery[bool] = False) -> Response:
    return await _call(state, UnloadModel(model_id, force), LOAD_CALL_TIMEOUT)


@get("/admin/health", responses=error_responses())
async def admin_health(state: State) -> Response:
    client: FleetClient = state.fleet
    try:
        reply = await client.call(GetStatus(), timeout=2.0)
    except SupervisorUnavailable as e:
        body = {"status": "unavailable", "supervisor": "unreachable", "reason": str(e), "workers": {}}
        return Response(msgspec.json.encode(body), status_code=503, media_type="application/json")
    workers = {m["id"]: m["state"] for m in reply.result["models"]}
    failed = [k for k, v in workers.items() if v == "failed"]
    body = {"status": "degraded" if failed else "ok", "supervisor": "ok", "workers": workers}
    return Response(msgspec.json.encode(body), media_type="application/json")


ROUTES = [models_status, load_model, unload_model, admin_health]
