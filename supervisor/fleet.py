"""The supervisor: the composition root that wires the fleet's parts together and runs them.

Each part has one job: `registry` (the slot table and routing table), `dispatch` (the sockets and
their loops), `loading` (ensure-ready, planning room, spawning), `spares` (the warm spare pool),
`stopping` (stops, drains, kills, crashes), `housekeeping` (measuring, TTL, trimming, watchdog),
`admin` (the RPC), `diagnostics` (diagnosis and dry runs). Only this process starts or ends
workers, and only through each slot's own
transitions (`slot.py`), so the state a status call reports is the state routing acts on.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.config import FleetConfig
from mlx_fleet.protocol import FleetStatus
from mlx_fleet.supervisor.control.admin_rpc import AdminRpc
from mlx_fleet.supervisor.control.catalog_service import CatalogService
from mlx_fleet.supervisor.control.diagnostics import Diagnostics
from mlx_fleet.supervisor.control.dispatch import Dispatcher
from mlx_fleet.supervisor.memory.housekeeping import Housekeeper
from mlx_fleet.supervisor.lifecycle.launcher import Launcher, PythonWorkerLauncher
from mlx_fleet.supervisor.lifecycle.loading import Loader
from mlx_fleet.supervisor.memory.sizes import Remembered, budget_bytes, tree_rss
from mlx_fleet.supervisor.lifecycle.slot_table import SlotTable
from mlx_fleet.supervisor.lifecycle.slot import WorkerSlot
from mlx_fleet.supervisor.lifecycle.spares import SparePool
from mlx_fleet.supervisor.lifecycle.stopping import Stopper
from mlx_fleet.supervisor.timeouts import Timeouts

__all__ = ["PythonWorkerLauncher", "Supervisor", "Timeouts"]
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
        self.config = config
        self.budget = budget_bytes(config.memory.budget) if budget is None else budget
        self.timeouts = timeouts or Timeouts.from_config(config.server)
        self.parent_pid = parent_pid
        self.registry = registry = SlotTable(config, catalog)
        self.dispatch = dispatch = Dispatcher(registry, frontend, backend)
        self.spares = SparePool(config.memory.spares, launcher, backend, registry, self.budget,
                                self.timeouts.stop_grace, self.held, probe)
        self.stopper = Stopper(registry, dispatch, self.timeouts,
                               load_failed=lambda slot, reason: self.loader.load_failed(slot, reason),
                               failed=lambda slot, reason: self.loader.failed(slot, reason))
        remembered = remembered or Remembered(None)
        self.loader = Loader(config, registry, dispatch, self.spares, self.stopper, launcher, backend,
                             remembered, self.budget, self.timeouts,
                             int(config.memory.prompt_cache), probe)
        self.housekeeper = Housekeeper(config, registry, self.stopper, self.spares, self.budget, self.timeouts,
                                       self.held, probe)
        self.catalog = CatalogService(config, registry, self.loader, self.stopper, self.timeouts)
        self.admin = AdminRpc(config, registry, dispatch, self.loader, self.stopper, self.spares, self.budget,
                              self.timeouts, self.held, self.catalog)
        self.admin.calls.update(Diagnostics(config, registry, remembered, self.budget).calls())
        dispatch.refuse_cold, dispatch.load = self.loader.refuse, self.loader.request
        dispatch.on_worker_control, dispatch.on_other_control = self.loader.on_control, self.spares.on_control
        dispatch.answer = self.admin.answer
        self.stopped = asyncio.Event()

    def held(self) -> int:
        """Bytes the fleet holds now: every worker with a process, leaving ones included, and the
        spares. Memory leaves this figure only when its process is gone."""
        return self.registry.held() + self.spares.memory()

    def status(self) -> FleetStatus:
        return self.admin.status()

    async def run(self) -> None:
        """Serve until `shutdown()`; preloaded models start loading at once, in order."""
        spawn = self.registry.spawn
        loops = [spawn(self.dispatch.frontend_loop(), "frontend"), spawn(self.dispatch.backend_loop(), "backend"),
                 spawn(self.housekeeper.run(), "housekeeping")]
        if self.parent_pid is not None:
            loops.append(spawn(self._watch_parent(), "parent-watch"))
        preload = [s for s in self.registry.slots.values() if s.config.preload and self.registry.lookup(s.id)]
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
            self.dispatch.close()

    async def shutdown(self) -> None:
        """End every worker and spare (in parallel) and stop serving. Safe to call more than once."""
        if not self.registry.accepting:
            await self.stopped.wait()
            return
        self.registry.accepting = False
        await asyncio.gather(self.spares.close(), *(self.stopper.stop_worker(s, "server shutting down")
                                                    for s in self.registry.slots.values()))
        self.stopped.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.parent_check)
            if os.getppid() != self.parent_pid:
                log.warning("parent process %s is gone; shutting down", self.parent_pid)
                await self.shutdown()
                return

    async def _preload(self, slots: list[WorkerSlot]) -> None:
        for slot in slots:
            error = await self.loader.ensure_ready(slot)
            if error is not None:
                log.error("preload of %s failed: %s", slot.id, error.message)
