"""Everything the supervisor knows about one configured model, loaded or not."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import Memory
from supervisor.process import WorkerProcess
from supervisor.state import Lifecycle, WorkerState


@dataclass(slots=True)
class Pending:
    """A request waiting for its model's worker to become ready."""

    kind: bytes
    rid: bytes
    router: bytes
    body: bytes


@dataclass
class ModelSlot:
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
    failures: int = 0                  # consecutive failed loads or crashes
    cooldown_until: float = 0.0        # monotonic time before which no new worker is started
    progress: float = 0.0              # monotonic time of the worker's last token (watchdog)

    def __post_init__(self) -> None:
        self.lifecycle = Lifecycle(self.config.id)
        self.pinned = self.config.preload

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def state(self) -> WorkerState:
        return self.lifecycle.state

    def next_identity(self) -> bytes:
        self.generation += 1
        self.identity = f"{self.id}#{self.generation}".encode()
        return self.identity

    @property
    def footprint(self) -> int:
        """What this worker counts against the budget: measured once known, estimated until then."""
        return self.measured or self.estimate

    def touch(self) -> None:
        self.last_used = time.time()
