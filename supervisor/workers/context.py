"""What every part of the supervisor shares, in one object the composition root builds once.

A part's constructor takes this context and then only the collaborators it calls, so the figures
every part reads (the budget, the timeouts, the slot table) have one source, and a new shared
thing is one field here instead of one more parameter on every constructor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlx_fleet.config import FleetConfig
from mlx_fleet.supervisor.workers.launcher import Launcher
from mlx_fleet.supervisor.workers.slot_table import SlotTable
from mlx_fleet.supervisor.memory.sizes import Remembered
from mlx_fleet.supervisor.workers.sockets import Sockets
from mlx_fleet.supervisor.timeouts import Timeouts


@dataclass(frozen=True)
class FleetContext:
    config: FleetConfig
    table: SlotTable           # every model's slot, the identities and the routing table
    sockets: Sockets           # both sockets, and everything sent on them
    budget: int                # bytes the fleet may hold (`memory.budget`, capped by Metal on macOS)
    timeouts: Timeouts
    launcher: Launcher         # how a worker or a spare process is started
    remembered: Remembered     # measured footprints, the next load's estimates
    probe: Callable[[int], int]  # a worker's memory seen from outside (its process tree's RSS); tests inject it
