"""The warm spare pool: worker processes with MLX's libraries already imported, waiting for a model.

A cold model taken by a spare costs its load, not the ~1 s of imports before it. The pool keeps
`memory.spares` of them (0: none). It is refilled in the background when a load has finished or
failed (a spare importing beside a load would slow that load), and only while the budget has room
for one more process. A load claims a spare synchronously, ready ones first, so two loads never
wait on the same spare, and then waits for it on its own, outside any lock: a slow spare delays
only the load that took it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from mlx_fleet.protocol import Spare, SpareStatus, decode_control
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.launcher import launch
from mlx_fleet.supervisor.workers.process import WorkerProcess
from mlx_fleet.supervisor.memory.sizes import RUNTIME_OVERHEAD, footprint

log = logging.getLogger("mlx_fleet.supervisor")
MAX_FAILURES = 3  # spares that died in a row before the pool stops trying


@dataclass
class SpareWorker:
    """A worker process with MLX's libraries imported (once `ready`), waiting to be given a model."""

    identity: bytes
    process: WorkerProcess | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # exited, discarded or never started
    memory: int = RUNTIME_OVERHEAD
    started: float = field(default_factory=time.monotonic)

    @property
    def usable(self) -> bool:
        return self.ready.is_set() and not self.gone.is_set() and self.process is not None and self.process.alive

    async def wait(self, timeout: float) -> bool:
        """Wait until it is ready or gone (or the timeout); True if it can take a model."""
        waiters = [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.gone.wait())]
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return self.usable

    def status(self) -> SpareStatus:
        return SpareStatus(pid=self.process.pid if self.process else None,
                           state="ready" if self.ready.is_set() else "starting", memory=self.memory)


class SparePool:
    def __init__(self, ctx: FleetContext) -> None:
        self.ctx, self.table = ctx, ctx.table
        self.wanted = ctx.config.memory.spares
        self.stop_grace = ctx.timeouts.stop_grace
        self.spares: list[SpareWorker] = []             # in the pool, oldest first
        self._unassigned: dict[bytes, SpareWorker] = {}  # pooled or claimed, not yet given a model
        self._count = 0
        self._failures = 0

    def memory(self) -> int:
        return sum(s.memory for s in self.spares)

    def fleet_held(self) -> int:
        """Bytes the fleet holds now: every worker with a process, leaving ones included, and the
        spares. Memory leaves this figure only when its process is gone."""
        return self.table.held() + self.memory()

    def refill(self) -> None:
        """Start a spare if the pool is short of one, the budget has room for it, and no other spare
        is importing: one import at a time (two at once on a few cores make both, and the load
        beside them, slower; the next one starts when this one is ready)."""
        importing = any(not s.ready.is_set() for s in self._unassigned.values())
        if (len(self.spares) < self.wanted and not importing and self.table.accepting
                and self._failures < MAX_FAILURES and self.fleet_held() + RUNTIME_OVERHEAD <= self.ctx.budget):
            self._count += 1
            spare = SpareWorker(f"spare#{self._count}".encode())
            self.spares.append(spare)
            self._unassigned[spare.identity] = spare
            self.table.spawn(self._run(spare), f"spare:{self._count}")

    async def _run(self, spare: SpareWorker) -> None:
        argv = self.ctx.launcher.spare_argv(spare.identity.decode(), self.ctx.sockets.worker_endpoint)
        if argv is None:  # this launcher has no spares
            self._failures = MAX_FAILURES
            self._drop(spare, "this launcher has no spares")
            return
        try:
            spare.process = await launch(self.ctx.launcher, argv, "spare")
        except OSError as e:
            self._failures += 1
            self._drop(spare, f"could not start: {e}")
            return
        if spare.gone.is_set():  # discarded while its process was being created
            await spare.process.terminate(self.stop_grace)
            return
        status = await spare.process.exited
        self._unassigned.pop(spare.identity, None)
        if spare in self.spares:  # it died while still a spare
            self._failures += 1
            self._drop(spare, f"it {status.describe()}")
            self.refill()
        spare.gone.set()

    def on_control(self, identity: bytes, body: bytes) -> bool:
        """A spare's message (it is ready); False if `identity` is no spare of ours."""
        spare = self._unassigned.get(identity)
        if spare is None:
            return False
        message = decode_control(body)
        if isinstance(message, Spare):
            spare.memory = footprint(self.ctx.probe(message.pid), message.memory)
            spare.ready.set()
            self._failures = 0
            self.refill()
        return True

    def claim(self) -> SpareWorker | None:
        """Take a spare out of the pool for one load: a ready one if any, else the oldest starting."""
        if not self.spares:
            return None
        spare = next((s for s in self.spares if s.ready.is_set()), self.spares[0])
        self.spares.remove(spare)
        return spare

    def release(self, spare: SpareWorker) -> None:
        """A claimed spare its load did not use: back to the pool if it can still serve, else ended."""
        if spare.usable and self.table.accepting:
            self.spares.insert(0, spare)
        else:
            self.discard(spare, "not ready in time" if not spare.gone.is_set() else "it is gone")

    def assigned(self, spare: SpareWorker) -> None:
        """The spare is a model's worker now: its messages go to that model's slot."""
        self._unassigned.pop(spare.identity, None)

    def discard(self, spare: SpareWorker, reason: str) -> None:
        """End a spare, pooled or claimed."""
        self._drop(spare, reason)
        if spare.process is not None and spare.process.alive:
            self.table.spawn(spare.process.terminate(self.stop_grace), "spare-stop")

    def _drop(self, spare: SpareWorker, reason: str) -> None:
        if spare in self.spares:
            self.spares.remove(spare)
        self._unassigned.pop(spare.identity, None)
        log.info("warm spare %s discarded: %s", spare.identity.decode(), reason)
        spare.gone.set()

    def trim(self) -> None:
        """While measured memory is over budget, the spares go first, newest first."""
        while self.spares and self.fleet_held() > self.ctx.budget:
            self.discard(self.spares[-1], "measured memory is over budget; the spares go first")

    async def close(self) -> None:
        spares = {s.identity: s for s in (*self._unassigned.values(), *self.spares)}.values()
        for spare in spares:
            self._drop(spare, "server shutting down")
        await asyncio.gather(*(s.process.terminate(self.stop_grace) for s in spares if s.process is not None))

    def status(self) -> list[SpareStatus]:
        return [s.status() for s in self.spares]
