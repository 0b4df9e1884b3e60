"""What the admin routes share: the supervisor's status where it can go without, the state
database in a thread. (A call to the supervisor is `fleet.calls.ask`, a JSON answer
`http.encoding.as_json`.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from mlx_fleet.protocol import FleetStatus, GetStatus
from mlx_fleet.router.fleet.client import FleetClient, SupervisorUnavailable
from mlx_fleet.router.router_state import RouterState
from mlx_fleet.state import db

T = TypeVar("T")

# A load waits for the model to be ready; that can take minutes for a big model.
LOAD_CALL_TIMEOUT = 3600.0


async def in_db(router: RouterState, fn: Callable[..., T], *args: Any) -> T:
    """`fn(connection, *args)` on the state database, in a thread: the event loop never waits on disk."""
    return await asyncio.to_thread(db.call, router.db_path, fn, *args)


async def fleet_status(client: FleetClient, timeout: float = 2.0) -> FleetStatus | None:
    """The supervisor's status, or None when it does not answer (for figures that can go without)."""
    try:
        reply = await client.call(GetStatus(), timeout=timeout)
    except SupervisorUnavailable:
        return None
    return msgspec.convert(reply.result, FleetStatus)
