"""The admin RPC: status, load, unload, ping, and the catalog's and diagnostics' calls. One handler
per call type in one table, so a new call is one struct in `mlx_fleet.protocol` and one entry
here. Replies are typed structs."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

from mlx_fleet.protocol import (
    GB,
    Failure,
    FleetStatus,
    GetStatus,
    LoadModel,
    LoadResult,
    MemoryTotals,
    Ping,
    PoolStatus,
    Reply,
    UnloadModel,
    UnloadResult,
    decode_call,
)
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.control.catalog_service import CATALOG_CALLS, CatalogService
from mlx_fleet.supervisor.control.diagnostics import Diagnostics
from mlx_fleet.supervisor.lifecycle.loading import Loader
from mlx_fleet.supervisor.lifecycle.spares import SparePool
from mlx_fleet.supervisor.lifecycle.stopping import Stopper

log = logging.getLogger("mlx_fleet.supervisor")


class AdminRpc:
    def __init__(self, ctx: FleetContext, loader: Loader, stopper: Stopper, spares: SparePool,
                 catalog: CatalogService, diagnostics: Diagnostics) -> None:
        self.config, self.table, self.sockets = ctx.config, ctx.table, ctx.sockets
        self.budget, self.timeouts = ctx.budget, ctx.timeouts
        self.loader, self.stopper, self.spares, self.catalog = loader, stopper, spares, catalog
        self.calls: dict[type, Callable[[Any], Awaitable[Reply]]] = {
            Ping: self._ping, GetStatus: self._status, LoadModel: self._load, UnloadModel: self._unload,
            **dict.fromkeys(CATALOG_CALLS, catalog.reply), **diagnostics.calls(),
        }

    async def answer(self, router: bytes, call_id: bytes, body: bytes) -> None:
        call = decode_call(body)
        handler = self.calls.get(type(call))
        try:
            reply = await handler(call) if handler else Reply(Failure("invalid_request", "unknown call", 400))
        except Exception as e:  # noqa: BLE001 - an admin call must always get an answer
            log.exception("admin call failed")
            reply = Reply(Failure("internal_error", f"{type(e).__name__}: {e}", 500))
        self.sockets.reply(router, call_id, reply)

    async def _ping(self, call: Ping) -> Reply:
        """Ready, or why not (`wait_for_profile` while the startup profile loads)."""
        return Reply(self.catalog.not_ready(), "pong")

    async def _status(self, call: GetStatus) -> Reply:
        return Reply(result=self.status())

    async def _load(self, call: LoadModel) -> Reply:
        slot = self.table.lookup(call.model)
        if slot is None:
            return Reply(Failure("model_not_found", f"The model `{call.model}` is not configured.", 404))
        failure = await self.loader.ensure_ready(slot)
        if failure is not None:
            status = 500 if failure.code == "model_load_failed" else failure.status
            return Reply(Failure(failure.code, failure.message, status, retry_after=failure.retry_after))
        slot.pinned = slot.pinned or call.pin
        model = slot.status(time.time(), self.table.ttls.get(slot.id, 0))
        return Reply(result=LoadResult(**{f: getattr(model, f) for f in model.__struct_fields__}))

    async def _unload(self, call: UnloadModel) -> Reply:
        slot = self.table.existing(call.model)
        if slot is None or not slot.state.has_process:
            return Reply(Failure("model_not_loaded", f"Model not loaded: {call.model}", 404))
        started = time.monotonic()
        if call.force:
            outcome, freed = "forced", await self.stopper.stop_worker(slot, "unloaded by an administrator (force)")
        else:
            outcome, freed = await self.stopper.drain_and_stop(slot, self.timeouts.drain)
        slot.pinned = slot.config.preload and self.config.memory.policy == "preload"
        return Reply(result=UnloadResult(model_id=slot.id, model=slot.id, action=outcome, memory_released=freed,
                                         seconds=round(time.monotonic() - started, 3), state=str(slot.state)))

    def status(self) -> FleetStatus:
        vm = psutil.virtual_memory()
        now, used = time.time(), self.spares.fleet_held()
        models = [s.status(now, self.table.ttls.get(s.id, 0)) for s in self.table.slots.values()]
        for model in models:
            if (entry := self.table.catalog.get(model.id)) is not None:
                model.tier, model.source = entry.tier, entry.source
        loaded = [m for m in models if m.state not in ("stopped", "failed")]  # those with a process
        spares = self.spares.status()
        memory = self.config.memory
        pool = PoolStatus(policy=memory.policy, budget=self.budget, in_use=used, available=self.budget - used,
                          max_models=memory.max_models, loaded=len(loaded), machine_total=vm.total,
                          machine_available=vm.available, accepting=self.table.accepting,
                          spare=spares[0] if spares else None, spares=spares, spares_wanted=self.spares.wanted)
        totals = MemoryTotals(active_gb=round(sum(m.memory.mlx_active or 0 for m in loaded) / GB, 3),
                              cache_gb=round(sum(m.memory.mlx_cache or 0 for m in loaded) / GB, 3))
        return FleetStatus(models=models, pool=pool, loaded_models=loaded, total_models=len(loaded), memory=totals,
                           max_memory_gb=round(self.budget / GB, 3), max_models=memory.max_models)
