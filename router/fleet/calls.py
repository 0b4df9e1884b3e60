"""Calls to the supervisor as the HTTP API answers them: a supervisor that cannot be reached is a
503 (said here once, for every route), a call it refused is its failure, and a result is checked
against the type the supervisor promised."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from mlx_fleet.protocol import Call
from mlx_fleet.router.fleet.client import FleetClient, SupervisorUnavailable
from mlx_fleet.router.http.errors import ApiError

T = TypeVar("T")


def unavailable(error: SupervisorUnavailable) -> ApiError:
    return ApiError(503, f"The model server is not available: {error}", code="supervisor_unavailable")


async def ask(client: FleetClient, call: Call, result: type[T], timeout: float | None = None) -> T:
    """One call; its result checked against the type the supervisor promised."""
    try:
        reply = await client.call(call, timeout)
    except SupervisorUnavailable as e:
        raise unavailable(e) from None
    if reply.failure is not None:
        raise ApiError.from_failure(reply.failure)
    return msgspec.convert(reply.result, result)
