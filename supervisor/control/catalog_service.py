"""The catalog inside the supervisor: which slot a model name means, and the registry's calls.

The supervisor owns the catalog because it owns the fleet: enabling, disabling, rescanning and
activating a profile all end in loads, pins and unloads, which only the supervisor may do. Any
enabled entry gets a slot the first time it is asked for, and from then on the memory policy
treats it exactly like a configured model (estimated from its files, then measured).
"""

from __future__ import annotations

import asyncio
import logging
import time

from mlx_fleet.catalog.entry import Activation, ModelEntry, ProfileList, ScanResult
from mlx_fleet.catalog.catalog import CatalogError
from mlx_fleet.protocol import (
    ActivateProfile,
    DeleteProfile,
    Failure,
    GetCatalog,
    GetProfiles,
    Rescan,
    Reply,
    ResolveTier,
    SaveProfile,
    SetModel,
)
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.lifecycle.loading import Loader
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.lifecycle.stopping import Stopper

log = logging.getLogger("mlx_fleet.supervisor")

CatalogCall = GetCatalog | Rescan | SetModel | ResolveTier | GetProfiles | SaveProfile | DeleteProfile | ActivateProfile
CATALOG_CALLS = (GetCatalog, Rescan, SetModel, ResolveTier, GetProfiles, SaveProfile, DeleteProfile, ActivateProfile)


class CatalogService:
    def __init__(self, ctx: FleetContext, loader: Loader, stopper: Stopper) -> None:
        self.config, self.table, self.timeouts = ctx.config, ctx.table, ctx.timeouts
        self.loader, self.stopper = loader, stopper
        self.catalog = ctx.table.catalog
        self.startup_profile = self.catalog.startup_profile()
        # `[catalog] wait_for_profile`: /health answers 503 until the startup profile is ready.
        self.waiting_for: str | None = self.startup_profile if self.config.catalog.wait_for_profile else None
        self.startup_error: str | None = None
        self._rescanning = asyncio.Lock()  # one scan at a time: each compares with the one before

    # -- readiness ----------------------------------------------------------------------------

    def not_ready(self) -> Failure | None:
        if self.waiting_for is None:
            return None
        if self.startup_error is not None:
            return Failure("profile_failed", f"Profile {self.waiting_for!r} could not be activated: "
                           f"{self.startup_error}", 503)
        return Failure("profile_loading", f"The models of profile {self.waiting_for!r} are still loading.", 503)

    # -- calls ----------------------------------------------------------------------------------

    async def reply(self, call: CatalogCall) -> Reply:
        """The admin RPC's handler for every registry call; a `CatalogError` is the caller's error."""
        try:
            return Reply(result=await self._answer(call))
        except CatalogError as e:
            return Reply(Failure(e.code, e.message, e.status))

    async def _answer(self, call: CatalogCall) -> object:
        if isinstance(call, GetCatalog):
            return self.catalog.registry(call.tier)
        if isinstance(call, Rescan):
            return await self.rescan()
        if isinstance(call, SetModel):
            return await self.set_model(call)
        if isinstance(call, ResolveTier):
            return self.resolve_tier(call.tier, call.embeddings)
        if isinstance(call, GetProfiles):
            return ProfileList(profiles=list(self.catalog.profiles().values()), active=self.catalog.active_profile)
        if isinstance(call, SaveProfile):
            return self.catalog.save_profile(call.name, list(call.models))
        if isinstance(call, DeleteProfile):
            return self.catalog.delete_profile(call.name)
        return await self.activate(call.name)

    async def rescan(self) -> ScanResult:
        """Look at the disk again; a loaded model that vanished ends after its requests finish."""
        async with self._rescanning:
            result = await asyncio.to_thread(self.catalog.rescan)
        for model_id in result.removed:
            slot = self.table.slots.get(model_id)
            if slot is not None:
                self.table.spawn(self._retire(slot, "its files are gone"), f"vanished:{model_id}")
        return result

    async def _retire(self, slot: WorkerSlot, reason: str) -> None:
        log.info("model %s: %s; unloading it once its requests finish", slot.id, reason)
        if slot.state.has_process:
            await self.stopper.drain_and_stop(slot, None)
        if self.catalog.get(slot.id) is None and not slot.state.has_process:
            self.table.slots.pop(slot.id, None)

    async def set_model(self, call: SetModel) -> ModelEntry:
        """A disabled model is unloaded (its requests get the drain timeout to finish)."""
        entry = self.catalog.require(call.model)
        if call.tier is not None:
            self.catalog.set_tier(entry.id, call.tier)
        if call.enabled is not None:
            self.catalog.set_enabled(entry.id, call.enabled)
            slot = self.table.slots.get(entry.id)
            if not call.enabled and slot is not None:
                slot.pinned = False
                if slot.state.has_process:
                    await self.stopper.drain_and_stop(slot, self.timeouts.drain)
        return entry

    def resolve_tier(self, tier: str, embeddings: bool) -> str:
        """A ready model of the tier if there is one (no swap), else the tier's smallest model."""
        members = [e for e in self.catalog.tier(tier) if (e.type == "embeddings") == embeddings]
        if not members:
            kind = "embedding" if embeddings else "generation"
            raise CatalogError(404, "model_not_found", f"No enabled {kind} model is in tier {tier!r}.")
        ready = [s for e in members if (s := self.table.slots.get(e.id)) is not None and s.state.serving]
        if ready:
            return min(ready, key=lambda s: len(s.inflight)).id
        return members[0].id

    async def activate(self, name: str) -> Activation:
        """Load and pin the profile's models, in order; unpin the previous profile's others."""
        started = time.monotonic()
        slots: list[WorkerSlot] = []
        for entry in self.catalog.profile_models(self.catalog.profile(name).models):
            slot = self.table.lookup(entry.id)
            assert slot is not None  # profile_models gives enabled entries only
            slots.append(slot)
        for slot in slots:
            # Pinned before it loads: the next load cannot evict it, and with policy "preload" a
            # request that arrives meanwhile waits for it instead of being refused.
            slot.pinned = True
            failure = await self.loader.ensure_ready(slot)
            if failure is not None:
                slot.pinned = slot.config.preload
                raise CatalogError(failure.status, failure.code, f"Profile {name!r}: {failure.message}")
        unpinned = self._unpin_previous({s.id for s in slots})
        self.catalog.set_active_profile(name)
        if self.waiting_for == name:
            self.waiting_for = None
        log.info("profile %s active: %s pinned", name, ", ".join(s.id for s in slots))
        return Activation(profile=name, pinned=[s.id for s in slots], unpinned=unpinned,
                          seconds=round(time.monotonic() - started, 3))

    def _unpin_previous(self, keep: set[str]) -> list[str]:
        previous = self.catalog.active_profile
        if previous is None or previous not in self.catalog.profiles():
            return []
        unpinned = []
        for model in self.catalog.profile(previous).models:
            slot = self.table.existing(model)
            if slot is None or slot.id in keep:
                continue
            slot.pinned = slot.config.preload
            unpinned.append(slot.id)
            if self.config.memory.policy == "preload" and not slot.pinned and slot.state.has_process:
                # With policy "preload" the active profile is the fleet: the rest goes.
                self.table.spawn(self.stopper.drain_and_stop(slot, None), f"profile-off:{slot.id}")
        return unpinned

    async def startup(self) -> None:
        """Activate the startup profile (`Catalog.startup_profile`) once the supervisor runs."""
        name = self.startup_profile
        assert name is not None
        try:
            await self.activate(name)
        except CatalogError as e:
            log.error("startup profile %s: %s", name, e.message)
            self.startup_error = e.message

