"""The housekeeping tick: measure every worker, kill hung ones, end idle ones, keep within budget.

Measuring a process tree walks the whole process table (about 1 ms), so it happens here, once a
tick, not on every worker report. The probe is injected, so tests can make memory grow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mlx_fleet.config import FleetConfig
from mlx_fleet.supervisor.memory.policy import expired, over_budget
from mlx_fleet.supervisor.lifecycle.slot_table import SlotTable
from mlx_fleet.supervisor.lifecycle.spares import SparePool
from mlx_fleet.supervisor.lifecycle.stopping import Stopper
from mlx_fleet.supervisor.timeouts import Timeouts

log = logging.getLogger("mlx_fleet.supervisor")


class Housekeeper:
    def __init__(self, config: FleetConfig, registry: SlotTable, stopper: Stopper, spares: SparePool, budget: int,
                 timeouts: Timeouts, held: Callable[[], int], probe: Callable[[int], int]) -> None:
        self.config, self.registry, self.stopper, self.spares = config, registry, stopper, spares
        self.budget, self.timeouts, self.held, self.probe = budget, timeouts, held, probe

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.housekeeping)
            self.tick(time.time())

    def tick(self, now: float) -> None:
        clock = time.monotonic()
        for slot in self.registry.slots.values():
            if slot.state.serving and slot.process is not None:
                slot.on_measured(self.probe(slot.process.pid))
                if slot.inflight and clock - slot.progress > self.timeouts.progress:
                    self.stopper.kill_hung(slot, clock - slot.progress)
        residents = self.registry.residents()
        if self.held() > self.budget:
            self.spares.trim()
        for model_id in expired(residents, now, self.registry.ttls):
            log.info("model %s idle for %s: unloading", model_id, self.config.memory.idle_ttl)
            self.stopper.stop_later(self.registry.slots[model_id], "idle past its TTL", "ttl")
        for model_id in over_budget(residents, self.budget):
            if self.registry.slots[model_id].state.serving:
                log.info("measured memory is over budget: unloading %s", model_id)
                self.registry.slots[model_id].evictions += 1
                self.stopper.stop_later(self.registry.slots[model_id], "memory over budget", "trim")
