"""Loading a model: one load for all callers, room planned first, a spare or a new process, failures.

Planning is the only part under the room lock: two plans must not count the same free memory,
but nothing slow happens inside it. The plan's state changes (the model's STARTING, which
reserves its room; its victims' stops and drains) happen in it synchronously; the waiting for the
victims to be gone, for a spare to finish importing and for the worker to load all happen outside
it, so a slow drain or a slow spare delays only the load that waits for it.

A drain already in progress delays a load only when the load needs the memory it frees: a plan
first counts leaving workers as still there (never chosen), and only if that does not fit does
it plan on their memory, and wait for them to be gone.

The loader started every worker process, so it also watches each one: an exit nobody asked for
is a crash (its requests fail, the model backs off, a pinned model comes back). Failures are
handled here, where the next load is started, so nothing below the loader has to call back up.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from mlx_fleet.units import fmt_bytes
from mlx_fleet.protocol import Assign, Failure, LoadFailed, Loading, MemoryReport, Ready, decode_control
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.launcher import PromptCacheArgs, launch
from mlx_fleet.supervisor.workers.process import WorkerProcess
from mlx_fleet.supervisor.workers.slot import IDLE, STARTING, LoadError, WorkerSlot
from mlx_fleet.supervisor.lifecycle.spares import SparePool, SpareWorker
from mlx_fleet.supervisor.workers.state import WorkerState
from mlx_fleet.supervisor.lifecycle.stopping import Stopper
from mlx_fleet.supervisor.memory.policy import make_room

log = logging.getLogger("mlx_fleet.supervisor")
S = WorkerState


class Loader:
    def __init__(self, ctx: FleetContext, spares: SparePool, stopper: Stopper) -> None:
        self.ctx, self.table, self.sockets, self.timeouts = ctx, ctx.table, ctx.sockets, ctx.timeouts
        self.spares, self.stopper = spares, stopper
        self._room_lock = asyncio.Lock()

    # -- who may load -------------------------------------------------------------------------

    def refuse(self, slot: WorkerSlot) -> Failure | None:
        """Why a request for this cold model is answered now instead of starting a load."""
        if (wait := slot.cooldown_left()) > 0:
            return self._cooldown_failure(slot, wait)
        if self.ctx.config.memory.policy == "preload" and not slot.pinned:
            return Failure("model_not_loaded", f"Model '{slot.id}' is not loaded, and this server serves only its "
                           "preloaded models (memory.policy = \"preload\").", 503)
        return None

    def request(self, slot: WorkerSlot) -> None:
        """A request is queued for this model: start its load unless one is under way."""
        if slot.state not in STARTING and (slot.ready is None or slot.ready.done()):
            self.table.spawn(self.ensure_ready(slot), f"load:{slot.id}")

    def _cooldown_failure(self, slot: WorkerSlot, wait: float) -> Failure:
        return Failure("model_load_cooldown", f"Model '{slot.id}' failed {slot.failures} time(s) in a row "
                       f"(last: {slot.last_error}); no new attempt for {wait:.1f} s.", 503, retry_after=wait)

    async def ensure_ready(self, slot: WorkerSlot) -> Failure | None:
        """Start the model's worker unless it runs, and wait for it: one load for all callers."""
        if slot.state.serving:
            return None
        if (wait := slot.cooldown_left()) > 0:
            return self._cooldown_failure(slot, wait)
        if slot.ready is None or slot.ready.done():
            if slot.state in (S.DRAINING, S.STOPPING):
                await slot.gone.wait()  # a fresh worker comes after this one has gone
            if slot.ready is None or slot.ready.done():
                slot.ready = asyncio.get_running_loop().create_future()
                self.table.spawn(self._start(slot, slot.ready), f"start:{slot.id}")
        try:
            await asyncio.shield(slot.ready)
        except LoadError as e:
            return e.failure
        return None

    @staticmethod
    def _current(slot: WorkerSlot, ready: asyncio.Future[None]) -> bool:
        """This load is still the one wanted (not given up on, not replaced by a newer one)."""
        return slot.ready is ready and not ready.done() and slot.state in STARTING

    # -- room ---------------------------------------------------------------------------------

    async def _start(self, slot: WorkerSlot, ready: asyncio.Future[None]) -> None:
        async with self._room_lock:  # one plan at a time, so two loads never count the same room
            waits = self._plan(slot, ready)
        if waits is None:
            return
        if waits and not await self._room_freed(slot, ready, waits):
            return
        if self._current(slot, ready) and await self._spawn(slot, ready):
            await self._await_load(slot)

    def _plan(self, slot: WorkerSlot, ready: asyncio.Future[None]) -> list[asyncio.Event] | None:
        """Choose and begin the evictions this load needs, and reserve its room (STARTING).
        Returns what to wait for before the worker may start, or None if it will not start."""
        if slot.state not in IDLE or slot.ready is not ready or ready.done():
            return None
        estimate, measured_before = self.ctx.remembered.estimate(slot.config)
        memory = self.ctx.config.memory
        plan = make_room(self.table.residents(exclude=slot, leaving=True), estimate, self.ctx.budget,
                         memory.max_models)
        waits = []
        if not plan.fits:  # only with the memory of workers already leaving: wait for them too
            plan = make_room(self.table.residents(exclude=slot), estimate, self.ctx.budget, memory.max_models)
            waits = [s.gone for s in self.table.leaving()]
        if not plan.fits:
            failure = Failure("insufficient_memory", f"Model '{slot.id}' does not fit in memory: {plan.reason}.", 503)
            slot.last_error = failure.message
            self.sockets.give_up(slot, failure)
            return None
        for model_id in plan.evict:
            log.info("evicting %s (least recently used) to make room for %s", model_id, slot.id)
            self.stopper.evict(self.table.slots[model_id], f"evicted to make room for {slot.id}")
        for model_id in plan.drain:
            log.info("draining %s to make room for %s", model_id, slot.id)
            self.stopper.drain(self.table.slots[model_id])
        waits += [self.table.slots[m].gone for m in (*plan.evict, *plan.drain)]
        slot.begin_start(estimate, measured_before)
        return waits

    async def _room_freed(self, slot: WorkerSlot, ready: asyncio.Future[None], waits: list[asyncio.Event]) -> bool:
        _, still = await asyncio.wait([asyncio.ensure_future(e.wait()) for e in waits],
                                      timeout=self.timeouts.drain + self.timeouts.stop_grace)
        for waiter in still:
            waiter.cancel()
        if not still:
            return True
        busy = ", ".join(s.id for s in self.table.slots.values() if s.state == S.DRAINING)
        failure = Failure("insufficient_memory", f"Model '{slot.id}' is waiting for room: {busy} did not "
                          f"finish its requests in {self.timeouts.drain:g} s.", 503, retry_after=self.timeouts.drain)
        if self._current(slot, ready):
            slot.cancel_start(failure.message)
        self.sockets.give_up(slot, failure)
        return False

    # -- the worker process -------------------------------------------------------------------

    async def _spawn(self, slot: WorkerSlot, ready: asyncio.Future[None]) -> bool:
        spare = self.spares.claim()
        if spare is not None:
            if await spare.wait(self.timeouts.load) and self._current(slot, ready):
                self._assign(slot, spare)
                return True
            self.spares.release(spare)
            if not self._current(slot, ready):
                return False  # unloaded while it waited for the spare
        identity = slot.next_identity()
        self.table.by_identity[identity] = slot
        argv = self.ctx.launcher.argv(slot.config, identity.decode(), self.sockets.worker_endpoint)
        try:
            process = await launch(self.ctx.launcher, argv, slot.id)
        except OSError as e:
            self.table.by_identity.pop(identity, None)
            self.load_failed(slot, f"could not start the worker: {e}")
            return False
        if not self._current(slot, ready):  # unloaded while the process was being created
            self.table.by_identity.pop(identity, None)
            await process.terminate(self.timeouts.stop_grace)
            return False
        self._adopt(slot, process, identity)
        return True

    def _assign(self, slot: WorkerSlot, spare: SpareWorker) -> None:
        """Hand the spare to this model: it skips the imports (seconds) and goes straight to loading."""
        assert spare.process is not None
        self.spares.assigned(spare)
        self.table.by_identity[spare.identity] = slot
        self._adopt(slot, spare.process, spare.identity)
        spare.process.label = slot.id
        model, cache = slot.config, PromptCacheArgs.of(self.ctx.config)
        self.sockets.send_control(spare.identity, Assign(model.id, model.path, model.type, cache.memory, cache.disk,
                                                         cache.dir))

    def _adopt(self, slot: WorkerSlot, process: WorkerProcess, identity: bytes) -> None:
        """The process is this model's worker now, watched for the rest of its life."""
        slot.adopt(process, identity)
        self.table.spawn(self._watch_exit(slot, process, identity), f"exit:{slot.id}")

    async def _await_load(self, slot: WorkerSlot) -> None:
        process = slot.process
        try:
            await asyncio.wait_for(asyncio.shield(slot.ready), self.timeouts.load)
        except TimeoutError:
            self.load_failed(slot, f"did not finish loading within {self.timeouts.load:g} s (server.load_timeout)")
            if process is not None:
                await process.terminate(self.timeouts.stop_grace)
        except LoadError:
            pass

    # -- what the worker says -----------------------------------------------------------------

    def on_control(self, slot: WorkerSlot, body: bytes) -> None:
        message = decode_control(body)
        if isinstance(message, MemoryReport):
            slot.on_report(message.memory)
        elif isinstance(message, Loading):
            slot.on_loading()
        elif isinstance(message, Ready):
            self._on_ready(slot, message)
        elif isinstance(message, LoadFailed):
            self.load_failed(slot, message.message, message.out_of_memory, message.traceback)

    def _on_ready(self, slot: WorkerSlot, message: Ready) -> None:
        if slot.process is None:
            return
        if not slot.on_ready(message, self.ctx.probe(slot.process.pid)):
            return  # a load that was given up on (timeout, unload) reporting late
        error = (slot.estimate - slot.measured) / slot.measured if slot.measured else 0.0
        log.info("model %s ready in %.2f s (pid %d): measured %s, estimated %s (%+.0f%%)", slot.id,
                 message.load_seconds, message.pid, fmt_bytes(slot.measured), fmt_bytes(slot.estimate), 100 * error)
        self.ctx.remembered.remember(slot.config, slot.measured)
        self.spares.refill()
        self.sockets.forward_pending(slot)
        slot.resolve(None)

    # -- failures -----------------------------------------------------------------------------

    async def _watch_exit(self, slot: WorkerSlot, process: WorkerProcess, identity: bytes) -> None:
        """Runs for the life of every worker process: an exit nobody asked for is a crash."""
        status = await process.exited
        self.table.by_identity.pop(identity, None)
        if slot.process is not process or slot.state == S.STOPPING:
            return  # replaced already, or ended on purpose: the stopper does the bookkeeping
        process.signal_group(signal.SIGKILL)  # anything it left in its process group
        was = slot.on_exit()
        if was == S.FAILED:
            return  # it said why it failed before it exited
        tail = process.last_lines()
        reason = f"the worker {status.describe()}" + (f"; last output: {tail}" if tail else "")
        log.error("model %s: %s", slot.id, reason)
        if was in STARTING:
            self.load_failed(slot, reason)
            return
        self.failed(slot, reason)
        self.sockets.fail_inflight(slot, Failure(
            "worker_crashed", f"The worker for model '{slot.id}' {status.describe()} while handling the request.", 500))
        self.sockets.fail_pending(slot, Failure(
            "worker_crashed", f"The worker for model '{slot.id}' {status.describe()}.", 500))

    def load_failed(self, slot: WorkerSlot, reason: str, out_of_memory: bool = False, traceback: str = "") -> None:
        """The load did not succeed: every waiter gets the same error, once. A load that ran out
        of memory is `insufficient_memory` (503), as a plan that found no room is."""
        slot.fail_load(reason, out_of_memory, self.timeouts.backoff, self.timeouts.backoff_max, traceback)
        self._respawn_if_pinned(slot)
        self.spares.refill()
        code = "insufficient_memory" if out_of_memory else "model_load_failed"
        self.sockets.give_up(slot, Failure(code, f"Model '{slot.id}' could not be loaded: {reason}", 503))

    def failed(self, slot: WorkerSlot, reason: str) -> None:
        """A loaded worker crashed or hung (`control.housekeeping.CrashListener`)."""
        slot.crashed(reason, self.timeouts.backoff, self.timeouts.backoff_max)
        self._respawn_if_pinned(slot)

    def _respawn_if_pinned(self, slot: WorkerSlot) -> None:
        if slot.pinned and self.table.accepting:
            self.table.spawn(self._respawn_later(slot, max(0.0, slot.cooldown_until - time.monotonic())),
                             f"respawn:{slot.id}")

    async def _respawn_later(self, slot: WorkerSlot, delay: float) -> None:
        """A pinned model is meant to stay loaded: bring it back once its backoff has passed."""
        await asyncio.sleep(delay)
        if not slot.state.has_process and self.table.accepting:
            await self.ensure_ready(slot)
