"""One configured model and its worker: the slot owns every change of its state and what goes with it.

Each method below is one move of the lifecycle: it checks the state it expects (a compare-and-swap
through `Lifecycle.swap`, against the one table in `state.py`) and updates the fields that belong
with that move, so no caller can change a state and forget its bookkeeping. Sockets, processes and
timers are not the slot's business: the components around it do those.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import (
    STATUS_MODEL_TYPES,
    Done,
    End,
    FailedLoad,
    Failure,
    Memory,
    ModelMemory,
    ModelStatus,
    Ready,
    gigabytes,
)
from mlx_fleet.supervisor.memory.sizes import footprint
from mlx_fleet.supervisor.workers.process import WorkerProcess
from mlx_fleet.supervisor.workers.state import Lifecycle, WorkerState

S = WorkerState
IDLE = frozenset({S.STOPPED, S.FAILED})
STARTING = frozenset({S.STARTING, S.LOADING})
LIVE = frozenset({S.STARTING, S.LOADING, S.READY, S.BUSY, S.DRAINING})


@dataclass(slots=True)
class Pending:
    """A request waiting for its model's worker to become ready."""

    kind: bytes
    rid: bytes
    router: bytes
    body: bytes


class LoadError(Exception):
    """A load that did not happen, carried to every caller that awaited it."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class WorkerSlot:
    config: ModelConfig
    lifecycle: Lifecycle = field(init=False)
    process: WorkerProcess | None = None
    identity: bytes = b""
    generation: int = 0
    # Single flight: every caller that needs this model loaded awaits the same future.
    ready: asyncio.Future[None] | None = None
    pending: collections.deque[Pending] = field(default_factory=collections.deque)
    inflight: set[bytes] = field(default_factory=set)
    pinned: bool = False
    report: Memory | None = None       # the worker's own last memory report
    measured: int = 0                  # footprint measured since it loaded (0: not loaded)
    tree_rss: int = 0                  # its process tree's RSS at the last housekeeping tick
    estimate: int = 0                  # what the policy assumed before loading
    estimate_measured: bool = False    # whether that estimate was a remembered measurement
    drained: asyncio.Event | None = None  # set when a draining worker's last request ends
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when a stop has fully finished
    context_length: int = 0
    load_seconds: float = 0.0
    loaded_at: float | None = None
    last_used: float | None = None
    served: int = 0
    tokens: int = 0
    last_error: str | None = None
    out_of_memory: bool = False        # the last load failed for want of memory
    failures: int = 0                  # consecutive failed loads or crashes
    last_failed_load: FailedLoad | None = None
    # Since the server started (for /metrics): loads and their seconds, failed loads, evictions, crashes.
    loads: int = 0
    load_seconds_total: float = 0.0
    load_failures: int = 0
    evictions: int = 0
    crashes: int = 0
    cooldown_until: float = 0.0        # monotonic time before which no new worker is started
    progress: float = 0.0              # monotonic time of the worker's last word (watchdog)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.config.id)
        self.pinned = self.config.preload

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def state(self) -> WorkerState:
        return self.lifecycle.state

    @property
    def footprint(self) -> int:
        """What this worker counts against the budget: measured once known, estimated until then."""
        return self.measured or self.estimate

    def touch(self) -> None:
        self.last_used = time.time()

    def next_identity(self) -> bytes:
        self.generation += 1
        self.identity = f"{self.id}#{self.generation}".encode()
        return self.identity

    # -- loading ------------------------------------------------------------------------------

    def begin_start(self, estimate: int, measured_before: bool) -> None:
        """Its room is planned: from here it counts against the budget, and no plan evicts it."""
        self.lifecycle.swap(IDLE, S.STARTING)
        self.estimate, self.estimate_measured = estimate, measured_before

    def cancel_start(self, reason: str) -> None:
        """No room came (the workers it waited for did not leave): back to no process."""
        self.lifecycle.swap(S.STARTING, S.STOPPED)
        self.last_error = reason

    def adopt(self, process: WorkerProcess, identity: bytes) -> None:
        self.process, self.identity = process, identity

    def on_loading(self) -> None:
        if self.state == S.STARTING:
            self.lifecycle.swap(S.STARTING, S.LOADING)

    def on_ready(self, message: Ready, tree_rss: int) -> bool:
        """The worker loaded; False if this load was already given up on (it reports late)."""
        if self.state not in STARTING or self.process is None:
            return False
        self.on_loading()
        self.lifecycle.swap(S.LOADING, S.READY)
        self.report, self.context_length = message.memory, message.context_length
        self.tree_rss, self.measured = tree_rss, footprint(tree_rss, message.memory)
        self.load_seconds, self.loaded_at = message.load_seconds, time.time()
        self.loads += 1
        self.load_seconds_total += message.load_seconds
        self.last_error, self.out_of_memory = None, False
        self.touch()
        return True

    def resolve(self, failure: Failure | None) -> None:
        """Answer everyone awaiting this load: ready (None), or the failure."""
        ready = self.ready
        if ready is None or ready.done():
            return
        if failure is None:
            ready.set_result(None)
        else:
            ready.set_exception(LoadError(failure))
            ready.exception()  # retrieved here, so an unawaited failure is not logged as lost

    # -- measuring ----------------------------------------------------------------------------

    def on_report(self, memory: Memory) -> None:
        """The worker's own figures (MLX's memory); also its heartbeat for the watchdog."""
        self.progress = time.monotonic()
        self.report = memory
        if self.process is not None:
            self.measured = footprint(self.tree_rss, memory)

    def on_measured(self, tree_rss: int) -> None:
        """Its process tree's RSS, measured from outside on the housekeeping tick."""
        self.tree_rss = tree_rss
        self.measured = footprint(tree_rss, self.report)

    # -- serving ------------------------------------------------------------------------------

    def on_request(self, rid: bytes) -> None:
        if not self.inflight:
            self.progress = time.monotonic()  # the watchdog measures silence from here
        self.inflight.add(rid)
        self.touch()
        if self.state == S.READY:
            self.lifecycle.swap(S.READY, S.BUSY)

    def on_finished(self, rid: bytes, end: End) -> None:
        self.inflight.discard(rid)
        self.touch()
        self.progress = time.monotonic()
        if not isinstance(end, Failure):
            self.served += 1
            self.failures = 0  # it works: the next failure starts the backoff from the beginning
            if isinstance(end, Done):
                self.tokens += end.usage.completion_tokens
        if not self.inflight:
            if self.state == S.BUSY:
                self.lifecycle.swap(S.BUSY, S.READY)
            elif self.state == S.DRAINING and self.drained is not None:
                self.drained.set()

    # -- ending -------------------------------------------------------------------------------

    def begin_drain(self) -> None:
        """Take no new requests; the worker ends when the in-flight ones have."""
        if self.state.serving:
            self.gone = asyncio.Event()
            self.lifecycle.swap(frozenset({S.READY, S.BUSY}), S.DRAINING)

    def begin_stop(self) -> WorkerState | None:
        """Stop taking anything: returns the state it left, None if there was nothing to stop."""
        if self.state == S.FAILED:
            self.lifecycle.swap(S.FAILED, S.STOPPED)
            return None
        if self.state not in LIVE:
            return None
        if self.state != S.DRAINING:
            self.gone = asyncio.Event()
        return self.lifecycle.swap(LIVE, S.STOPPING)

    def on_stopped(self, process: WorkerProcess | None) -> None:
        """A stop finished: the process is reaped, so its memory leaves the accounting now."""
        if self.process is not process:
            return  # a newer worker took the slot meanwhile
        self.process, self.measured, self.tree_rss, self.report = None, 0, 0, None
        if self.state == S.STOPPING:
            self.lifecycle.swap(S.STOPPING, S.STOPPED)
            self.gone.set()

    def on_exit(self) -> WorkerState:
        """The process ended on its own; returns the state it was in (the caller decides what that means)."""
        was = self.state
        self.process, self.measured, self.tree_rss = None, 0, 0
        if was in LIVE:
            self.lifecycle.swap(LIVE, S.FAILED)
        # Anyone waiting for this worker to drain or leave: it has left.
        self.gone.set()
        if self.drained is not None:
            self.drained.set()
        return was

    def fail_load(self, reason: str, out_of_memory: bool, backoff: float, backoff_max: float,
                  traceback: str = "") -> None:
        """`traceback`: the worker's, or else the last lines of its output."""
        if self.state in STARTING:
            self.lifecycle.swap(STARTING, S.FAILED)
        self.record_failure(reason, backoff, backoff_max)
        self.out_of_memory = out_of_memory
        self.load_failures += 1
        tail = "\n".join(self.process.log_tail) if self.process is not None else ""
        self.last_failed_load = FailedLoad(at=time.time(), reason=reason, traceback=traceback or tail,
                                           out_of_memory=out_of_memory)

    def crashed(self, reason: str, backoff: float, backoff_max: float) -> None:
        """A loaded worker died or hung."""
        self.crashes += 1
        self.record_failure(reason, backoff, backoff_max)

    def record_failure(self, reason: str, backoff: float, backoff_max: float) -> None:
        """A failed load or a crash: back off exponentially before the next worker for this model.

        The first failure is retried at once (a worker killed once, e.g. by the OS for memory,
        should not cost the next request anything); from the second in a row, the wait doubles.
        """
        self.failures += 1
        self.last_error = reason
        delay = 0.0 if self.failures == 1 else min(backoff * 2 ** (self.failures - 2), backoff_max)
        self.cooldown_until = time.monotonic() + delay

    def cooldown_left(self) -> float:
        return self.cooldown_until - time.monotonic() if not self.state.has_process else 0.0

    # -- reporting ----------------------------------------------------------------------------

    def status(self, now: float, ttl: float) -> ModelStatus:
        idle = self.state == S.READY and not self.pinned and ttl > 0
        report, loaded = self.report, self.state.has_process
        return ModelStatus(
            id=self.id, type=self.config.type, state=str(self.state),
            pid=self.process.pid if self.process else None,
            memory=ModelMemory(measured=self.measured or None, estimated=self.estimate or None,
                               estimate_was_measured=self.estimate_measured,
                               mlx_active=report.mlx_active if report else None,
                               mlx_cache=report.mlx_cache if report else None),
            preload=self.config.preload, pinned=self.pinned,
            loaded_at=self.loaded_at if loaded else None, last_used=self.last_used,
            load_seconds=self.load_seconds or None, context_length=self.context_length or None,
            in_flight=len(self.inflight), queued=len(self.pending), served=self.served,
            tokens_generated=self.tokens,
            ttl_remaining=max(0.0, ttl - (now - (self.last_used or now))) if idle else None,
            last_error=self.last_error, last_error_out_of_memory=self.out_of_memory,
            model_id=self.id, model_type=STATUS_MODEL_TYPES[self.config.type],
            size_gb=gigabytes(self.footprint) if loaded else None, preloaded=self.pinned,
            loads=self.loads, load_seconds_total=self.load_seconds_total, load_failures=self.load_failures,
            evictions=self.evictions, crashes=self.crashes,
        )
