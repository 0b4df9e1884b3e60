"""What the admin routes share: a call to the supervisor, its status when it can go without,
the state database in a thread, and a JSON answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from litestar import Response
from litestar.datastructures import State

from mlx_fleet.protocol import Call, FleetStatus, GetStatus, Reply
from mlx_fleet.router.fleet.client import FleetClient, SupervisorUnavailable
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.state import db

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
