"""Admin calls that look at a model without loading it: a diagnosis, and a dry run of its load.

A dry run asks the same memory policy the loader asks (`policy.make_room`, a pure function) with
the same figures (`Remembered.estimate`, the slot table's residents), so its answer is what a load
would do now; it only reads. The warnings say, in words, what could stop or slow the load.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from mlx_fleet.model_types import detect_type, engine_knows, hf_cache_snapshot, model_type_of
from mlx_fleet.protocol import Diagnose, Diagnosis, DryRun, DryRunResult, DryRunWarning, Failure, Reply
from mlx_fleet.units import fmt_bytes
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.slot import WorkerSlot
from mlx_fleet.supervisor.memory.policy import Plan, in_use, make_room

GIB = 2**30


class Diagnostics:
    def __init__(self, ctx: FleetContext) -> None:
        self.config, self.table, self.remembered, self.budget = ctx.config, ctx.table, ctx.remembered, ctx.budget

    def calls(self) -> dict[type, Callable[[Any], Awaitable[Reply]]]:
        """Handlers for `AdminRpc.calls`."""
        return {Diagnose: self._diagnose, DryRun: self._dry_run}

    def _slot(self, model: str) -> WorkerSlot | None:
        return self.table.lookup(model)

    @staticmethod
    def _unknown(model: str) -> Reply:
        return Reply(Failure("model_not_found", f"The model `{model}` is not configured.", 404))

    async def _diagnose(self, call: Diagnose) -> Reply:
        slot = self._slot(call.model)
        if slot is None:
            return self._unknown(call.model)
        estimate, measured = self.remembered.estimate(slot.config)
        return Reply(result=Diagnosis(
            model_id=slot.id, state=str(slot.state), detected_type=detect_type(slot.config.path),
            estimate_bytes=estimate, estimate_was_measured=measured,
            config=msgspec.to_builtins(slot.config, enc_hook=str), last_failed_load=slot.last_failed_load))

    async def _dry_run(self, call: DryRun) -> Reply:
        slot = self._slot(call.model)
        if slot is None:
            return self._unknown(call.model)
        return Reply(result=self.dry_run(slot))

    def dry_run(self, slot: WorkerSlot) -> DryRunResult:
        estimate, measured = self.remembered.estimate(slot.config)
        residents = self.table.residents(exclude=slot)
        loaded = slot.state.has_process
        plan = Plan(fits=True) if loaded else make_room(residents, estimate, self.budget,
                                                        self.config.memory.max_models)
        return DryRunResult(
            model_id=slot.id, type=slot.config.type, state=str(slot.state), estimate_bytes=estimate,
            estimate_was_measured=measured, vram_estimate_gb=round(estimate / GIB, 3), budget_bytes=self.budget,
            in_use_bytes=in_use(residents), fits_now=plan.fits and not plan.evict and not plan.drain,
            fits=plan.fits, would_evict=list(plan.evict), would_drain=list(plan.drain),
            warnings=[*self._memory_warnings(slot, estimate, measured, plan, loaded), *self._source_warnings(slot)])

    def _memory_warnings(self, slot: WorkerSlot, estimate: int, measured: bool, plan: Plan,
                         loaded: bool) -> list[DryRunWarning]:
        out = []
        if loaded:
            out.append(DryRunWarning(severity="info", category="state", title="Already loaded",
                                     message=f"Model '{slot.id}' has a worker ({slot.state}); a load does nothing."))
        if estimate > self.budget:
            out.append(DryRunWarning(
                severity="error", category="memory", title="Larger than the budget",
                message=f"Model '{slot.id}' needs about {fmt_bytes(estimate)}, more than the whole memory budget "
                        f"({fmt_bytes(self.budget)}); it cannot load whatever is evicted."))
        elif not plan.fits:
            out.append(DryRunWarning(severity="error", category="memory", title="No room now",
                                     message=f"Model '{slot.id}' does not fit: {plan.reason}."))
        if plan.evict or plan.drain:
            names = ", ".join([*plan.evict, *(f"{m} (after its requests finish)" for m in plan.drain)])
            out.append(DryRunWarning(severity="warning", category="memory", title="Would evict",
                                     message=f"Loading '{slot.id}' would end {names} to make room."))
        if not measured:
            out.append(DryRunWarning(
                severity="info", category="memory", title="Estimated, not measured",
                message="The size is estimated from the weight files plus a worker's own cost; it is measured "
                        "on the first load and remembered."))
        return out

    def _source_warnings(self, slot: WorkerSlot) -> list[DryRunWarning]:
        path = slot.config.path
        local = Path(path).expanduser().exists()
        out = []
        if not local and hf_cache_snapshot(path) is None:
            if self.config.server.allow_downloads:
                out.append(DryRunWarning(severity="warning", category="download", title="Will be downloaded",
                                         message=f"'{path}' is not in the local Hugging Face cache; the first "
                                                 "load downloads it (the estimate does not know its size)."))
            else:
                out.append(DryRunWarning(severity="error", category="download", title="Not cached, downloads off",
                                         message=f"'{path}' is not a local path and not in the Hugging Face cache, "
                                                 "and server.allow_downloads is false: the load will fail."))
        model_type = model_type_of(path)
        if model_type is not None and not engine_knows(slot.config.type, model_type):
            out.append(DryRunWarning(severity="warning", category="architecture", title="Unknown architecture",
                                     message=f"The {slot.config.type} engine has no module for model_type "
                                             f"'{model_type}'; the load may fail unless it maps it to another."))
        return out
