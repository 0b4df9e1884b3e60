"""The housekeeping tick: measure every worker, kill hung ones, end idle ones, keep within budget.

Measuring a process tree walks the whole process table (about 1 ms), so it happens here, once a
tick, not on every worker report. The probe is injected, so tests can make memory grow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.lifecycle.spares import SparePool
from mlx_fleet.supervisor.lifecycle.stopping import Stopper
from mlx_fleet.supervisor.memory.policy import expired, over_budget

log = logging.getLogger("mlx_fleet.supervisor")


class CrashListener(Protocol):
    """The loader: a worker the watchdog killed failed, so its model backs off (and comes back if pinned)."""

    def failed(self, slot: WorkerSlot, reason: str) -> None: ...


class Housekeeper:
    def __init__(self, ctx: FleetContext, stopper: Stopper, spares: SparePool, crashes: CrashListener) -> None:
        self.ctx, self.table, self.timeouts = ctx, ctx.table, ctx.timeouts
        self.stopper, self.spares, self.crashes = stopper, spares, crashes

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.housekeeping)
            self.tick(time.time())

    def tick(self, now: float) -> None:
        clock = time.monotonic()
        for slot in self.table.slots.values():
            if slot.state.serving and slot.process is not None:
                slot.on_measured(self.ctx.probe(slot.process.pid))
                if slot.inflight and clock - slot.progress > self.timeouts.progress:
                    reason = self.stopper.kill_hung(slot, clock - slot.progress)
                    self.crashes.failed(slot, reason)
        residents = self.table.residents()
        self.spares.trim()
        for model_id in expired(residents, now, self.table.ttls):
            log.info("model %s idle for %s: unloading", model_id, self.ctx.config.memory.idle_ttl)
            self.stopper.stop_later(self.table.slots[model_id], "idle past its TTL", "ttl")
        for model_id in over_budget(residents, self.ctx.budget):
            if self.table.slots[model_id].state.serving:
                log.info("measured memory is over budget: unloading %s", model_id)
                self.table.slots[model_id].evictions += 1
                self.stopper.stop_later(self.table.slots[model_id], "memory over budget", "trim")
