"""The supervisor: the composition root that wires the fleet's parts together and runs them.

Every part shares one `FleetContext` (the config, the slot table, the sockets, the budget, the
timeouts, ...) and is built here, once, with the collaborators it calls, in an order in which
each exists before anything that needs it: the spare pool and the stopper, the loader (loads,
and what becomes of a failed or crashed worker), the housekeeper (measuring, TTL, trimming,
watchdog), the catalog service and diagnostics, the admin RPC, and last the dispatcher, whose
loops hand what comes in to the loader, the spare pool and the admin RPC. Only this process
starts or ends workers, and only through each slot's own transitions (`workers/slot.py`), so
the state a status call reports is the state routing acts on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.config import FleetConfig
from mlx_fleet.protocol import FleetStatus
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.control.admin_rpc import AdminRpc
from mlx_fleet.supervisor.control.catalog_service import CatalogService
from mlx_fleet.supervisor.control.diagnostics import Diagnostics
from mlx_fleet.supervisor.control.dispatch import Dispatcher
from mlx_fleet.supervisor.workers.launcher import Launcher
from mlx_fleet.supervisor.lifecycle.loading import Loader
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.workers.slot_table import SlotTable
from mlx_fleet.supervisor.lifecycle.spares import SparePool
from mlx_fleet.supervisor.lifecycle.stopping import Stopper
from mlx_fleet.supervisor.control.housekeeping import Housekeeper
from mlx_fleet.supervisor.memory.sizes import Remembered, budget_bytes, tree_rss
from mlx_fleet.supervisor.workers.sockets import Sockets
from mlx_fleet.supervisor.timeouts import Timeouts

log = logging.getLogger("mlx_fleet.supervisor")


class Supervisor:
    def __init__(
        self,
        config: FleetConfig,
        frontend: str,
        backend: str,
        launcher: Launcher,
        timeouts: Timeouts | None = None,
        parent_pid: int | None = None,
        remembered: Remembered | None = None,
        budget: int | None = None,
        probe: Callable[[int], int] = tree_rss,
        catalog: Catalog | None = None,
    ) -> None:
        """`probe`: a worker's memory as seen from outside (its process tree's RSS); tests inject it.
        `catalog`: the scanned catalog (without one, the configured models only)."""
        self.parent_pid = parent_pid
        table = SlotTable(config, catalog)
        self.ctx = ctx = FleetContext(
            config=config, table=table, sockets=Sockets(table, frontend, backend),
            budget=budget_bytes(config.memory.budget) if budget is None else budget,
            timeouts=timeouts or Timeouts.from_config(config.server), launcher=launcher,
            remembered=remembered or Remembered(None), probe=probe)
        self.spares = SparePool(ctx)
        self.stopper = Stopper(ctx)
        self.loader = Loader(ctx, self.spares, self.stopper)
        self.housekeeper = Housekeeper(ctx, self.stopper, self.spares, crashes=self.loader)
        self.catalog = CatalogService(ctx, self.loader, self.stopper)
        self.admin = AdminRpc(ctx, self.loader, self.stopper, self.spares, self.catalog, Diagnostics(ctx))
        self.dispatch = Dispatcher(ctx, loads=self.loader, spares=self.spares, calls=self.admin)
        self.stopped = asyncio.Event()

    def status(self) -> FleetStatus:
        return self.admin.status()

    async def run(self) -> None:
        """Serve until `shutdown()`; preloaded models start loading at once, in order."""
        table = self.ctx.table
        spawn = table.spawn
        loops = [spawn(self.dispatch.frontend_loop(), "frontend"), spawn(self.dispatch.backend_loop(), "backend"),
                 spawn(self.housekeeper.run(), "housekeeping")]
        if self.parent_pid is not None:
            loops.append(spawn(self._watch_parent(), "parent-watch"))
        preload = [s for s in table.slots.values() if s.config.preload and table.lookup(s.id)]
        if preload:
            spawn(self._preload(preload), "preload")
        else:
            self.spares.refill()
        if self.catalog.startup_profile:
            spawn(self.catalog.startup(), "profile")
        try:
            await self.stopped.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.ctx.sockets.close()

    async def shutdown(self) -> None:
        """End every worker and spare (in parallel) and stop serving. Safe to call more than once."""
        table = self.ctx.table
        if not table.accepting:
            await self.stopped.wait()
            return
        table.accepting = False
        await asyncio.gather(self.spares.close(), *(self.stopper.stop_worker(s, "server shutting down")
                                                    for s in table.slots.values()))
        self.stopped.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(self.ctx.timeouts.parent_check)
            if os.getppid() != self.parent_pid:
                log.warning("parent process %s is gone; shutting down", self.parent_pid)
                await self.shutdown()
                return

    async def _preload(self, slots: list[WorkerSlot]) -> None:
        for slot in slots:
            error = await self.loader.ensure_ready(slot)
            if error is not None:
                log.error("preload of %s failed: %s", slot.id, error.message)
