"""The supervisor: owns the workers, routes requests to them, relays their streams back.

Two sockets, both bound here: `frontend` (routers connect) and `backend` (workers connect, each
with its own identity). Tokens never pass through this
process: workers push them straight to the router (see `mlx_fleet.protocol`); the supervisor gets
a copy of each request's END, to count it, and a heartbeat from each busy worker.

Only this process starts or ends workers, and only through `ModelSlot.lifecycle`, so the state a
status call reports is the state the routing code acts on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psutil
import zmq
import zmq.asyncio

from mlx_fleet.config import FleetConfig, ModelConfig, ServerConfig
from mlx_fleet.units import fmt_bytes
from mlx_fleet.protocol import (
    MAX_MESSAGE_BYTES,
    Done,
    Failure,
    GetStatus,
    Ping,
    Kind,
    LoadFailed,
    Loading,
    LoadModel,
    MemoryReport,
    Ready,
    Reply,
    Shutdown,
    Spare,
    Assign,
    UnloadModel,
    decode_call,
    decode_control,
    decode_end,
    encode,
)
from supervisor.memory import RUNTIME_OVERHEAD, Remembered, budget_bytes, footprint, tree_rss
from supervisor.policy import Resident, expired, make_room, over_budget
from supervisor.process import WorkerProcess
from supervisor.slot import ModelSlot, Pending
from supervisor.state import WorkerState

log = logging.getLogger("mlx_fleet.supervisor")
S = WorkerState


@dataclass(frozen=True)
class Timeouts:
    """Every wait the supervisor makes; tests shrink them to milliseconds."""

    load: float = 600.0
    stop_grace: float = 10.0
    drain: float = 60.0
    parent_check: float = 0.5
    housekeeping: float = 1.0
    progress: float = 120.0      # silence with requests in flight before a worker counts as hung
    backoff: float = 2.0         # first cooldown after a failure; doubles per consecutive failure
    backoff_max: float = 300.0

    @classmethod
    def from_config(cls, server: ServerConfig) -> Timeouts:
        return cls(load=server.load_timeout, progress=server.progress_timeout, backoff=server.restart_backoff)


class Launcher(Protocol):
    """Builds a worker's command line; the fault tests swap in a fake worker here."""

    def argv(self, model: ModelConfig, identity: str, endpoint: str) -> list[str]: ...

    def spare_argv(self, identity: str, endpoint: str) -> list[str] | None:
        """A warm spare's command line, or None if this launcher has no spares."""

    def env(self) -> dict[str, str]: ...


class PythonWorkerLauncher:
    """`python -m worker` with the same interpreter, offline unless the config allows downloads."""

    def __init__(self, state_dir: Path, allow_downloads: bool, prompt_cache_bytes: int, sink: str) -> None:
        self.sink = sink
        self.state_dir = state_dir
        self.allow_downloads = allow_downloads
        self.prompt_cache_bytes = prompt_cache_bytes

    def argv(self, model: ModelConfig, identity: str, endpoint: str) -> list[str]:
        return [*self._common(identity, endpoint), "--model-id", model.id, "--path", model.path,
                "--type", model.type if model.type != "auto" else "text"]

    def spare_argv(self, identity: str, endpoint: str) -> list[str] | None:
        return [*self._common(identity, endpoint), "--spare"]

    def _common(self, identity: str, endpoint: str) -> list[str]:
        return [
            sys.executable, "-m", "worker",
            "--endpoint", endpoint,
            "--sink", self.sink,
            "--identity", identity,
            "--parent-pid", str(os.getpid()),
            "--state-dir", str(self.state_dir),
            "--prompt-cache-bytes", str(self.prompt_cache_bytes),
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if not self.allow_downloads:
            env["HF_HUB_OFFLINE"] = "1"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env


@dataclass
class SpareWorker:
    """A worker process with MLX's libraries already imported, waiting to be given a model."""

    process: WorkerProcess
    identity: bytes
    ready: asyncio.Event
    memory: int = RUNTIME_OVERHEAD
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # discarded: exited, trimmed or never started


def _failure(code: str, message: str, status: int, retry_after: float | None = None) -> bytes:
    return encode(Failure(code, message, status, None, retry_after))


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
    ) -> None:
        self.config = config
        self.budget = budget_bytes(config.memory.budget) if budget is None else budget
        self.remembered = remembered or Remembered(None)
        default_ttl = config.memory.idle_ttl
        self.ttls = {m.id: m.idle_ttl if m.idle_ttl is not None else default_ttl
                     for m in config.models}
        self._room_lock = asyncio.Lock()
        self.spare: SpareWorker | None = None
        self._spare_count = 0
        self._spare_failures = 0
        self.frontend_endpoint = frontend
        self.backend_endpoint = backend
        self.launcher = launcher
        self.timeouts = timeouts or Timeouts.from_config(config.server)
        self.parent_pid = parent_pid
        self.slots: dict[str, ModelSlot] = {m.id: ModelSlot(m) for m in config.models}
        self.by_name: dict[str, ModelSlot] = {
            name: self.slots[m.id] for name, m in config.model_ids().items()
        }
        self.by_identity: dict[bytes, ModelSlot] = {}
        # Request id -> (router identity, slot): the whole routing table of the data path.
        self.routes: dict[bytes, tuple[bytes, ModelSlot]] = {}
        self.ctx = zmq.asyncio.Context()
        self.frontend = self._bind(zmq.ROUTER, frontend)
        self.backend = self._bind(zmq.ROUTER, backend)
        self.accepting = True
        self.stopped = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def _bind(self, kind: int, endpoint: str) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.bind(endpoint)
        return sock

    # -- life of the supervisor ---------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `shutdown()`; preloaded models start loading at once, in order."""
        loops = [
            self._spawn_task(self._frontend_loop(), "frontend"),
            self._spawn_task(self._backend_loop(), "backend"),
            self._spawn_task(self._housekeeping(), "housekeeping"),
        ]
        if self.parent_pid is not None:
            loops.append(self._spawn_task(self._watch_parent(), "parent-watch"))
        preload = [s for s in self.slots.values() if s.config.preload]
        if preload:
            self._spawn_task(self._preload(preload), "preload")
        else:
            self._want_spare()
        try:
            await self.stopped.wait()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            self.frontend.close(0)
            self.backend.close(0)
            self.ctx.term()

    async def shutdown(self) -> None:
        """End every worker (in parallel) and stop serving. Safe to call more than once."""
        if not self.accepting:
            await self.stopped.wait()
            return
        self.accepting = False
        spare, self.spare = self.spare, None
        stops = [self._stop_worker(s, "server shutting down") for s in self.slots.values()]
        if spare is not None:
            spare.gone.set()
            if spare.process is not None:
                stops.append(spare.process.terminate(self.timeouts.stop_grace))
        await asyncio.gather(*stops)
        self.stopped.set()

    async def _watch_parent(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.parent_check)
            if os.getppid() != self.parent_pid:
                log.warning("parent process %s is gone; shutting down", self.parent_pid)
                await self.shutdown()
                return

    async def _preload(self, slots: list[ModelSlot]) -> None:
        for slot in slots:
            error = await self.ensure_ready(slot)
            if error is not None:
                log.error("preload of %s failed: %s", slot.id, error.message)

    def _spawn_task(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- the data path ------------------------------------------------------------------------

    async def _frontend_loop(self) -> None:
        recv, backend_send = self.frontend.recv_multipart, self.backend.send_multipart
        while True:
            frames = await recv(copy=True)
            router, kind, rid = frames[0], frames[1], frames[2]
            if kind == Kind.GENERATE or kind == Kind.EMBED:
                self._admit(router, kind, rid, frames[3].decode(), frames[4])
            elif kind == Kind.CANCEL:
                self._cancel(rid)
            elif kind == Kind.CALL:
                self._spawn_task(self._answer(router, rid, frames[3]), "admin-call")

    def _admit(self, router: bytes, kind: bytes, rid: bytes, model: str, body: bytes) -> None:
        slot = self.by_name.get(model)
        if slot is None:
            self._reply_end(router, rid, _failure(
                "model_not_found", f"The model `{model}` does not exist or you do not have access to it.", 404))
            return
        if not self.accepting:
            self._reply_end(router, rid, _failure("shutting_down", "The server is shutting down.", 503, 5))
            return
        if slot.state.serving:
            self._forward(slot, kind, rid, router, body)
            return
        if (wait := slot.cooldown_until - time.monotonic()) > 0:
            self._reply_end(router, rid, encode(self._cooldown_failure(slot, wait)))
            return
        if self.config.memory.policy == "preload" and not slot.pinned:
            self._reply_end(router, rid, _failure(
                "model_not_loaded", f"Model '{slot.id}' is not loaded, and this server serves only its preloaded "
                "models (memory.policy = \"preload\").", 503))
            return
        slot.pending.append(Pending(kind, rid, router, body))
        if slot.state not in (S.STARTING, S.LOADING) and (slot.ready is None or slot.ready.done()):
            self._spawn_task(self.ensure_ready(slot), f"load:{slot.id}")

    def _forward(self, slot: ModelSlot, kind: bytes, rid: bytes, router: bytes, body: bytes) -> None:
        self.routes[rid] = (router, slot)
        if not slot.inflight:
            slot.progress = time.monotonic()  # the watchdog measures silence from here
        slot.inflight.add(rid)
        slot.touch()
        if slot.state == S.READY:
            slot.lifecycle.swap(S.READY, S.BUSY)
        self.backend.send_multipart((slot.identity, kind, rid, body))

    def _cancel(self, rid: bytes) -> None:
        route = self.routes.get(rid)
        if route is not None:
            slot = route[1]
            self.backend.send_multipart((slot.identity, Kind.CANCEL, rid))
            return
        for slot in self.slots.values():
            for p in slot.pending:
                if p.rid == rid:
                    slot.pending.remove(p)
                    return

    def _reply_end(self, router: bytes, rid: bytes, body: bytes) -> None:
        self.frontend.send_multipart((router, Kind.END, rid, body))

    async def _backend_loop(self) -> None:
        """Control messages and END copies from workers; tokens never come through here."""
        recv = self.backend.recv_multipart
        routes = self.routes
        while True:
            frames = await recv(copy=True)
            identity, kind, rid = frames[0], frames[1], frames[2]
            if kind == Kind.END:
                route = routes.pop(rid, None)
                if route is not None:
                    self._finished(route[1], rid, frames[3])
            elif kind == Kind.CONTROL:
                slot = self.by_identity.get(identity)
                if slot is not None:
                    self._on_control(slot, frames[3])
                elif self.spare is not None and identity == self.spare.identity:
                    self._on_spare_control(frames[3])

    def _finished(self, slot: ModelSlot, rid: bytes, body: bytes) -> None:
        slot.inflight.discard(rid)
        slot.touch()
        slot.progress = time.monotonic()
        end = decode_end(body)
        if not isinstance(end, Failure):
            slot.served += 1
            slot.failures = 0  # it works: the next failure starts the backoff from the beginning
            if isinstance(end, Done):
                slot.tokens += end.usage.completion_tokens
        if not slot.inflight:
            if slot.state == S.BUSY:
                slot.lifecycle.swap(S.BUSY, S.READY)
            elif slot.state == S.DRAINING and slot.drained is not None:
                slot.drained.set()

    # -- loading, with room made first --------------------------------------------------------

    async def ensure_ready(self, slot: ModelSlot) -> Failure | None:
        """Start the model's worker unless it runs, and wait for it: one load for all callers."""
        if slot.state.serving:
            return None
        if not slot.state.has_process and (wait := slot.cooldown_until - time.monotonic()) > 0:
            return self._cooldown_failure(slot, wait)
        if slot.ready is None or slot.ready.done():
            if slot.state not in (S.STOPPED, S.FAILED):
                await self._wait_gone(slot)  # draining or stopping: a fresh worker comes after
            if slot.ready is None or slot.ready.done():
                slot.ready = asyncio.get_running_loop().create_future()
                self._spawn_task(self._make_room_and_start(slot), f"start:{slot.id}")
        try:
            await asyncio.shield(slot.ready)
        except LoadError as e:
            return e.failure
        return None

    async def _wait_gone(self, slot: ModelSlot) -> None:
        if slot.state in (S.DRAINING, S.STOPPING):
            await slot.gone.wait()

    def residents(self, exclude: ModelSlot | None = None) -> list[Resident]:
        """The policy's view: every worker that holds memory and is not already on its way out
        (a load waits for those to be gone before it starts, so their memory is not planned on)."""
        return [
            Resident(s.id, s.footprint, s.pinned, bool(s.inflight or s.pending),
                     s.state in (S.STARTING, S.LOADING), s.last_used or 0.0)
            for s in self.slots.values()
            if s is not exclude and s.state in (S.STARTING, S.LOADING, S.READY, S.BUSY)
        ]

    def held(self) -> int:
        """Bytes the fleet holds now: every worker with a process, leaving ones included, and the
        spare. Memory leaves this figure only when its process is gone."""
        workers = sum(s.footprint for s in self.slots.values() if s.state.has_process)
        return workers + (self.spare.memory if self.spare is not None else 0)

    async def _make_room_and_start(self, slot: ModelSlot) -> None:
        async with self._room_lock:  # one plan at a time, so two loads never count the same room
            slot.estimate, slot.estimate_measured = self.remembered.estimate(slot.config)
            failure = await self._make_room(slot)
            if failure is not None:
                slot.last_error = failure.message
                self._give_up(slot, failure)
                return
            slot.lifecycle.swap(frozenset({S.STOPPED, S.FAILED}), S.STARTING)
            spawned = await self._spawn(slot)
        if spawned:
            await self._await_load(slot)

    async def _make_room(self, slot: ModelSlot) -> Failure | None:
        memory = self.config.memory
        plan = make_room(self.residents(exclude=slot), slot.estimate, self.budget, memory.max_models)
        if not plan.fits:
            return Failure("insufficient_memory", f"Model '{slot.id}' does not fit in memory: {plan.reason}.", 503)
        # The state changes happen here, synchronously, so that no request slips in between the
        # plan and the stop; the waiting happens in tasks.
        for model_id in plan.evict:
            log.info("evicting %s (least recently used) to make room for %s", model_id, slot.id)
            victim = self.slots[model_id]
            process = self._begin_stop(victim, f"evicted to make room for {slot.id}")
            self._spawn_task(self._finish_stop(victim, process), f"evict:{model_id}")
        for model_id in plan.drain:
            log.info("draining %s to make room for %s", model_id, slot.id)
            victim = self.slots[model_id]
            self._begin_drain(victim)
            self._spawn_task(self._drain_and_stop(victim, None), f"drain:{model_id}")
        leaving = [s.gone for s in self.slots.values() if s.state in (S.DRAINING, S.STOPPING)]
        if leaving:
            _, still = await asyncio.wait([asyncio.ensure_future(e.wait()) for e in leaving],
                                          timeout=self.timeouts.drain + self.timeouts.stop_grace)
            for waiter in still:
                waiter.cancel()
            if still:
                busy = ", ".join(s.id for s in self.slots.values() if s.state == S.DRAINING)
                return Failure("insufficient_memory", f"Model '{slot.id}' is waiting for room: {busy} did not "
                               f"finish its requests in {self.timeouts.drain:g} s.", 503,
                               retry_after=self.timeouts.drain)
        return None

    # -- the warm spare -------------------------------------------------------------------------

    def _want_spare(self) -> None:
        """Start a spare if none runs, one is wanted, and the budget has room for one more process."""
        if (not self.config.memory.warm_spare or not self.accepting or self.spare is not None
                or self._spare_failures >= 3):
            return
        if self.held() + RUNTIME_OVERHEAD > self.budget:
            return
        self._spare_count += 1
        identity = f"spare#{self._spare_count}".encode()
        self.spare = SpareWorker(None, identity, asyncio.Event())  # type: ignore[arg-type]
        self._spawn_task(self._start_spare(self.spare), "spare")

    async def _start_spare(self, spare: SpareWorker) -> None:
        argv = self.launcher.spare_argv(spare.identity.decode(), self.backend_endpoint)
        if argv is None:  # this launcher has no spares (the fake worker's)
            self._spare_failures = 3
            self._discard_spare("this launcher has no spares")
            return
        try:
            spare.process = await WorkerProcess.spawn(argv, self.launcher.env(), "spare")
        except OSError as e:
            self._spare_failures += 1
            self._discard_spare(f"could not start: {e}")
            return
        if self.spare is not spare:  # discarded while its process was being created
            await spare.process.terminate(self.timeouts.stop_grace)
            return
        status = await spare.process.exited
        if self.spare is spare:  # it died while still a spare
            self._spare_failures += 1
            self._discard_spare(f"it {status.describe()}")
            self._want_spare()

    def _discard_spare(self, reason: str) -> None:
        spare, self.spare = self.spare, None
        if spare is None:
            return
        log.info("warm spare discarded: %s", reason)
        spare.gone.set()
        if spare.process is not None and spare.process.alive:
            self._spawn_task(spare.process.terminate(self.timeouts.stop_grace), "spare-stop")

    def _on_spare_control(self, body: bytes) -> None:
        message = decode_control(body)
        if isinstance(message, Spare) and self.spare is not None:
            self.spare.memory = footprint(tree_rss(message.pid), message.memory)
            self.spare.ready.set()
            self._spare_failures = 0

    async def _take_spare(self, slot: ModelSlot) -> bool:
        """Hand the spare to this model: it skips the imports (seconds) and goes straight to loading."""
        spare = self.spare
        if spare is None:
            return False
        waiters = [asyncio.ensure_future(spare.ready.wait()), asyncio.ensure_future(spare.gone.wait())]
        await asyncio.wait(waiters, timeout=self.timeouts.load, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        if (self.spare is not spare or not spare.ready.is_set() or spare.process is None
                or not spare.process.alive or slot.state != S.STARTING):
            return False
        self.spare = None
        slot.identity = spare.identity
        self.by_identity[spare.identity] = slot
        slot.process = spare.process
        spare.process.label = slot.id
        assign = Assign(slot.id, slot.config.path, slot.config.type, int(self.config.memory.prompt_cache))
        self.backend.send_multipart((spare.identity, Kind.CONTROL, b"", encode(assign)))
        self._spawn_task(self._watch_exit(slot, spare.process, spare.identity), f"exit:{slot.id}")
        return True

    async def _spawn(self, slot: ModelSlot) -> bool:
        if await self._take_spare(slot):
            return True
        if slot.state != S.STARTING:
            return False  # unloaded while it waited for the spare
        identity = slot.next_identity()
        self.by_identity[identity] = slot
        argv = self.launcher.argv(slot.config, identity.decode(), self.backend_endpoint)
        try:
            process = await WorkerProcess.spawn(argv, self.launcher.env(), slot.id)
        except OSError as e:
            self._load_failed(slot, f"could not start the worker: {e}")
            return False
        if slot.state != S.STARTING:  # unloaded while the process was being created
            self.by_identity.pop(identity, None)
            await process.terminate(self.timeouts.stop_grace)
            return False
        slot.process = process
        self._spawn_task(self._watch_exit(slot, process, identity), f"exit:{slot.id}")
        return True

    async def _await_load(self, slot: ModelSlot) -> None:
        process = slot.process
        try:
            await asyncio.wait_for(asyncio.shield(slot.ready), self.timeouts.load)
        except TimeoutError:
            self._load_failed(slot, f"did not finish loading within {self.timeouts.load:g} s "
                                    "(server.load_timeout)")
            if process is not None:
                await process.terminate(self.timeouts.stop_grace)
        except LoadError:
            pass

    def _on_control(self, slot: ModelSlot, body: bytes) -> None:
        message = decode_control(body)
        slot.progress = time.monotonic()  # any word from the worker: it is not stuck
        if isinstance(message, MemoryReport):
            slot.report = message.memory
            if slot.process is not None:
                slot.measured = footprint(slot.tree_rss, message.memory)
        elif isinstance(message, Loading):
            if slot.state == S.STARTING:
                slot.lifecycle.swap(S.STARTING, S.LOADING)
        elif isinstance(message, Ready):
            self._on_ready(slot, message)
        elif isinstance(message, LoadFailed):
            self._load_failed(slot, message.message)

    def _on_ready(self, slot: ModelSlot, message: Ready) -> None:
        if slot.state not in (S.STARTING, S.LOADING) or slot.process is None:
            return  # a load that was given up on (timeout, unload) reporting late
        if slot.state == S.STARTING:
            slot.lifecycle.swap(S.STARTING, S.LOADING)
        slot.lifecycle.swap(S.LOADING, S.READY)
        slot.report, slot.context_length = message.memory, message.context_length
        slot.tree_rss = tree_rss(slot.process.pid)
        slot.measured = footprint(slot.tree_rss, message.memory)
        slot.load_seconds, slot.loaded_at, slot.last_error = message.load_seconds, time.time(), None
        slot.touch()
        error = (slot.estimate - slot.measured) / slot.measured if slot.measured else 0.0
        log.info("model %s ready in %.2f s (pid %d): measured %s, estimated %s (%+.0f%%)", slot.id,
                 message.load_seconds, message.pid, fmt_bytes(slot.measured), fmt_bytes(slot.estimate), 100 * error)
        self.remembered.remember(slot.config, slot.measured)
        self._want_spare()
        while slot.pending:
            p = slot.pending.popleft()
            self._forward(slot, p.kind, p.rid, p.router, p.body)
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_result(None)

    def _cooldown_failure(self, slot: ModelSlot, wait: float) -> Failure:
        return Failure("model_load_cooldown", f"Model '{slot.id}' failed {slot.failures} time(s) in a row "
                       f"(last: {slot.last_error}); no new attempt for {wait:.1f} s.", 503, retry_after=wait)

    def _record_failure(self, slot: ModelSlot, reason: str) -> None:
        """A failed load or a crash: back off exponentially before the next worker for this model.

        The first failure is retried at once (a worker killed once, e.g. by the OS for memory,
        should not cost the next request anything); from the second in a row, the wait doubles.
        """
        slot.failures += 1
        slot.last_error = reason
        delay = 0.0 if slot.failures == 1 else min(self.timeouts.backoff * 2 ** (slot.failures - 2),
                                                   self.timeouts.backoff_max)
        slot.cooldown_until = time.monotonic() + delay
        if slot.pinned and self.accepting:
            self._spawn_task(self._respawn_later(slot, delay), f"respawn:{slot.id}")

    async def _respawn_later(self, slot: ModelSlot, delay: float) -> None:
        """A pinned model is meant to stay loaded: bring it back once its backoff has passed."""
        await asyncio.sleep(delay)
        if not slot.state.has_process and self.accepting:
            await self.ensure_ready(slot)

    def _load_failed(self, slot: ModelSlot, reason: str) -> None:
        """The load did not succeed: every waiter gets the same error, once."""
        if slot.state in (S.STARTING, S.LOADING):
            slot.lifecycle.to(S.FAILED)
        self._record_failure(slot, reason)
        self._want_spare()
        self._give_up(slot, Failure("model_load_failed", f"Model '{slot.id}' could not be loaded: {reason}", 503))

    def _give_up(self, slot: ModelSlot, failure: Failure) -> None:
        self._fail_pending(slot, failure)
        if slot.ready is not None and not slot.ready.done():
            slot.ready.set_exception(LoadError(failure))
            slot.ready.exception()  # retrieved here, so an unawaited failure is not logged as lost

    def _fail_pending(self, slot: ModelSlot, failure: Failure) -> None:
        body = encode(failure)
        while slot.pending:
            p = slot.pending.popleft()
            self._reply_end(p.router, p.rid, body)

    def _fail_inflight(self, slot: ModelSlot, failure: Failure) -> None:
        body = encode(failure)
        for rid in list(slot.inflight):
            route = self.routes.pop(rid, None)
            if route is not None:
                self._reply_end(route[0], rid, body)
        slot.inflight.clear()

    # -- ending workers ------------------------------------------------------------------------

    async def _watch_exit(self, slot: ModelSlot, process: WorkerProcess, identity: bytes) -> None:
        status = await process.exited
        self.by_identity.pop(identity, None)
        if slot.process is not process or slot.state == S.STOPPING:
            return  # replaced already, or ended on purpose: the stopper does the bookkeeping
        process.signal_group(signal.SIGKILL)  # anything it left in its process group
        slot.process, slot.measured, slot.tree_rss = None, 0, 0
        if slot.state == S.FAILED:
            return  # it said why it failed before it exited
        tail = process.last_lines()
        reason = f"the worker {status.describe()}" + (f"; last output: {tail}" if tail else "")
        log.error("model %s: %s", slot.id, reason)
        if slot.state in (S.STARTING, S.LOADING):
            self._load_failed(slot, reason)
            return
        slot.lifecycle.to(S.FAILED)
        self._record_failure(slot, reason)
        self._fail_inflight(slot, Failure(
            "worker_crashed",
            f"The worker for model '{slot.id}' {status.describe()} while handling the request.", 500))
        self._fail_pending(slot, Failure(
            "worker_crashed", f"The worker for model '{slot.id}' {status.describe()}.", 500))

    def _begin_stop(self, slot: ModelSlot, reason: str, failure: Failure | None = None) -> WorkerProcess | None:
        """The synchronous half of a stop: from here on no request can reach this worker."""
        process = slot.process
        if slot.state == S.FAILED:
            slot.lifecycle.swap(S.FAILED, S.STOPPED)
        elif slot.state.has_process and slot.state != S.STOPPING:
            if slot.state != S.DRAINING:
                slot.gone = asyncio.Event()
            was = slot.lifecycle.to(S.STOPPING)
            unloaded = failure or Failure("model_unloaded", f"Model '{slot.id}' was unloaded: {reason}.", 503)
            self._fail_inflight(slot, unloaded)
            if was in (S.STARTING, S.LOADING) or not self.accepting:
                self._give_up(slot, unloaded)
            if process is not None:
                with contextlib.suppress(zmq.ZMQError):
                    self.backend.send_multipart((slot.identity, Kind.CONTROL, b"", encode(Shutdown())))
        return process

    async def _stop_worker(self, slot: ModelSlot, reason: str) -> int:
        """End the worker now; returns the bytes its accounting held, released once it is gone."""
        freed = slot.footprint if slot.process is not None else 0
        await self._finish_stop(slot, self._begin_stop(slot, reason))
        return freed

    async def _finish_stop(self, slot: ModelSlot, process: WorkerProcess | None) -> None:
        if process is not None:
            await process.terminate(self.timeouts.stop_grace)
        if slot.process is process:
            slot.process, slot.measured, slot.tree_rss, slot.report = None, 0, 0, None
            if slot.state == S.STOPPING:
                slot.lifecycle.swap(S.STOPPING, S.STOPPED)
                slot.gone.set()  # only now, with every process of it reaped, is its memory free

    def _begin_drain(self, slot: ModelSlot) -> None:
        if slot.state.serving:
            slot.gone = asyncio.Event()
            slot.lifecycle.to(S.DRAINING)

    async def _drain_and_stop(self, slot: ModelSlot, force_after: float | None) -> tuple[str, int]:
        """Take no new requests, let the in-flight ones finish, then end the worker.

        With `force_after`, requests still running after that many seconds are ended with an
        error (an administrator's unload); without it the worker simply ends when they are done
        (an eviction: a busy worker's requests are never cut short to make room).
        """
        self._begin_drain(slot)
        outcome = "drained"
        if slot.inflight:
            slot.drained = asyncio.Event()
            try:
                await asyncio.wait_for(slot.drained.wait(), force_after)
            except TimeoutError:
                outcome = "forced"
        return outcome, await self._stop_worker(slot, "drained" if outcome == "drained" else
                                                f"its requests did not finish within {force_after:g} s")

    # -- housekeeping: measure, expire, keep within budget --------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.housekeeping)
            self.housekeep(time.time())

    def housekeep(self, now: float) -> None:
        clock = time.monotonic()
        for slot in self.slots.values():
            if slot.state.serving and slot.process is not None:
                slot.tree_rss = tree_rss(slot.process.pid)
                slot.measured = footprint(slot.tree_rss, slot.report)
                if slot.inflight and clock - slot.progress > self.timeouts.progress:
                    self._kill_hung(slot, clock - slot.progress)
        residents = self.residents()
        if self.spare is not None and self.held() > self.budget:
            self._discard_spare("measured memory is over budget; the spare goes first")
        for model_id in expired(residents, now, self.ttls):
            log.info("model %s idle for %s: unloading", model_id, self.config.memory.idle_ttl)
            self._spawn_task(self._stop_worker(self.slots[model_id], "idle past its TTL"), f"ttl:{model_id}")
        for model_id in over_budget(residents, self.budget):
            if self.slots[model_id].state.serving:
                log.info("measured memory is over budget: unloading %s", model_id)
                self._spawn_task(self._stop_worker(self.slots[model_id], "memory over budget"), f"trim:{model_id}")

    def _kill_hung(self, slot: ModelSlot, silent: float) -> None:
        """No token for too long with requests in flight: the worker is stuck; no grace for it."""
        reason = f"sent nothing for {silent:.1f} s with requests in flight (server.progress_timeout)"
        log.error("model %s: worker %s; killing it", slot.id, reason)
        hung = Failure("worker_hung", f"The worker for model '{slot.id}' {reason} and was killed.", 500)
        process = self._begin_stop(slot, reason, hung)
        if process is not None:
            process.signal_group(signal.SIGKILL)
        self._record_failure(slot, f"the worker {reason}")
        self._spawn_task(self._finish_stop(slot, process), f"kill:{slot.id}")

    # -- admin calls --------------------------------------------------------------------------

    async def _answer(self, router: bytes, call_id: bytes, body: bytes) -> None:
        call = decode_call(body)
        try:
            if isinstance(call, Ping):
                reply = Reply(result="pong")
            elif isinstance(call, GetStatus):
                reply = Reply(result=self.status())
            elif isinstance(call, LoadModel):
                reply = await self._load_call(call)
            elif isinstance(call, UnloadModel):
                reply = await self._unload_call(call)
            else:
                reply = Reply(Failure("invalid_request", "unknown call", 400))
        except Exception as e:  # noqa: BLE001 - an admin call must always get an answer
            log.exception("admin call failed")
            reply = Reply(Failure("internal_error", f"{type(e).__name__}: {e}", 500))
        self.frontend.send_multipart((router, Kind.REPLY, call_id, encode(reply)))

    async def _load_call(self, call: LoadModel) -> Reply:
        slot = self.by_name.get(call.model)
        if slot is None:
            return Reply(Failure("model_not_found", f"The model `{call.model}` is not configured.", 404))
        failure = await self.ensure_ready(slot)
        if failure is not None:
            status = 500 if failure.code == "model_load_failed" else failure.status
            return Reply(Failure(failure.code, failure.message, status, retry_after=failure.retry_after))
        slot.pinned = slot.pinned or call.pin
        return Reply(result=self.model_status(slot, time.time()))

    async def _unload_call(self, call: UnloadModel) -> Reply:
        slot = self.by_name.get(call.model)
        if slot is None or not slot.state.has_process:
            return Reply(Failure("model_not_loaded", f"The model `{call.model}` is not loaded.", 404))
        started = time.monotonic()
        if call.force:
            outcome, freed = "forced", await self._stop_worker(slot, "unloaded by an administrator (force)")
        else:
            outcome, freed = await self._drain_and_stop(slot, self.timeouts.drain)
        slot.pinned = slot.config.preload and self.config.memory.policy == "preload"
        return Reply(result={"model": slot.id, "action": outcome, "memory_released": freed,
                             "seconds": round(time.monotonic() - started, 3), "state": str(slot.state)})

    def model_status(self, slot: ModelSlot, now: float) -> dict:
        ttl = self.ttls.get(slot.id, 0)
        idle = slot.state == S.READY and not slot.pinned and ttl > 0
        return {
            "id": slot.id,
            "type": slot.config.type,
            "state": str(slot.state),
            "pid": slot.process.pid if slot.process else None,
            "memory": {"measured": slot.measured or None, "estimated": slot.estimate or None,
                       "estimate_was_measured": slot.estimate_measured,
                       "mlx_active": slot.report.mlx_active if slot.report else None,
                       "mlx_cache": slot.report.mlx_cache if slot.report else None},
            "preload": slot.config.preload,
            "pinned": slot.pinned,
            "loaded_at": slot.loaded_at if slot.state.has_process else None,
            "last_used": slot.last_used,
            "load_seconds": slot.load_seconds or None,
            "context_length": slot.context_length or None,
            "in_flight": len(slot.inflight),
            "queued": len(slot.pending),
            "served": slot.served,
            "tokens_generated": slot.tokens,
            "ttl_remaining": max(0.0, ttl - (now - (slot.last_used or now))) if idle else None,
            "last_error": slot.last_error,
        }

    def status(self) -> dict:
        vm = psutil.virtual_memory()
        now = time.time()
        used = self.held()
        spare = self.spare
        return {
            "models": [self.model_status(s, now) for s in self.slots.values()],
            "pool": {
                "policy": self.config.memory.policy,
                "budget": self.budget,
                "in_use": used,
                "available": self.budget - used,
                "max_models": self.config.memory.max_models,
                "loaded": sum(1 for s in self.slots.values() if s.state.has_process),
                "machine_total": vm.total,
                "machine_available": vm.available,
                "accepting": self.accepting,
                "spare": None if spare is None else {
                    "pid": spare.process.pid if spare.process else None,
                    "state": "ready" if spare.ready.is_set() else "starting", "memory": spare.memory},
            },
        }


class LoadError(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure
