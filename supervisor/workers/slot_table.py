"""The fleet's tables: every model's slot, by id, by client name (through the catalog) and by
worker identity, and the routing table of requests in flight. Every component reads the fleet
through this one object, so a new feature (a catalog, per-model logs, usage) has one place to look.

Configured models have a slot from the start; any other enabled catalog model gets one the first
time it is asked for, and from then on is served like a configured one."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.supervisor.memory.policy import Resident
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.workers.state import WorkerState

S = WorkerState
log = logging.getLogger("mlx_fleet.supervisor")


class SlotTable:
    def __init__(self, config: FleetConfig, catalog: Catalog | None = None) -> None:
        """Without a catalog (tests of the supervisor alone), one of the configured models only."""
        self.slots: dict[str, WorkerSlot] = {m.id: WorkerSlot(m) for m in config.models}
        if catalog is None:
            catalog = Catalog(config)
            catalog.rescan()
        self.catalog = catalog
        self.by_identity: dict[bytes, WorkerSlot] = {}
        # Request id -> (router identity, slot): the whole routing table of the data path.
        self.routes: dict[bytes, tuple[bytes, WorkerSlot]] = {}
        self.default_ttl = config.memory.idle_ttl
        self.ttls: dict[str, float] = {m.id: m.idle_ttl if m.idle_ttl is not None else self.default_ttl
                                       for m in config.models}
        self.accepting = True  # False once shutdown began: nothing new is loaded or admitted
        self._tasks: set[asyncio.Task] = set()

    def lookup(self, name: str) -> WorkerSlot | None:
        """The slot of the enabled model a client's name (id or alias) means; None: 404."""
        entry = self.catalog.get(name)
        if entry is None or not entry.enabled:
            return None
        return self.slots.get(entry.id) or self._add(self.catalog.model_config(entry))

    def existing(self, name: str) -> WorkerSlot | None:
        """The slot a name means if it has one, enabled or not (an unload must find a disabled model)."""
        model_id = self.catalog.names.get(name)
        return None if model_id is None else self.slots.get(model_id)

    def _add(self, model: ModelConfig) -> WorkerSlot:
        slot = self.slots[model.id] = WorkerSlot(model)
        self.ttls[model.id] = self.default_ttl
        return slot

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        """A background task the fleet keeps a reference to until it ends."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def residents(self, exclude: WorkerSlot | None = None, leaving: bool = False) -> list[Resident]:
        """The policy's view: every worker that holds memory. Leaving ones (draining, stopping)
        only with `leaving`, and then as never-chosen: their memory is on its way out."""
        states = (S.STARTING, S.LOADING, S.READY, S.BUSY) + ((S.DRAINING, S.STOPPING) if leaving else ())
        return [
            Resident(s.id, s.footprint, s.pinned, bool(s.inflight or s.pending),
                     s.state in (S.STARTING, S.LOADING, S.DRAINING, S.STOPPING), s.last_used or 0.0)
            for s in self.slots.values()
            if s is not exclude and s.state in states
        ]

    def held(self) -> int:
        """Bytes every worker with a process holds, leaving ones included: memory leaves this
        figure only when its process is gone."""
        return sum(s.footprint for s in self.slots.values() if s.state.has_process)

    def leaving(self) -> list[WorkerSlot]:
        return [s for s in self.slots.values() if s.state in (S.DRAINING, S.STOPPING)]
