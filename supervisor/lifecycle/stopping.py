"""Ending workers: the stops, drains and kills the fleet decides on.

A stop has a synchronous half (`begin_stop`: from that instant no request can reach the worker)
and an awaited half (`finish_stop`: the process group is ended and reaped, and only then does its
memory leave the accounting). A drain takes no new requests and stops the worker when its last
request ends. An exit nobody asked for is not a stop: the loader, which started the process,
watches for it and handles the crash.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from mlx_fleet.protocol import Failure
from mlx_fleet.supervisor.workers.context import FleetContext
from mlx_fleet.supervisor.workers.process import WorkerProcess
from mlx_fleet.supervisor.workers.slot import STARTING, WorkerSlot

log = logging.getLogger("mlx_fleet.supervisor")


class Stopper:
    def __init__(self, ctx: FleetContext) -> None:
        self.table, self.sockets, self.timeouts = ctx.table, ctx.sockets, ctx.timeouts

    def begin_stop(self, slot: WorkerSlot, reason: str, failure: Failure | None = None) -> WorkerProcess | None:
        """The synchronous half of a stop: from here on no request can reach this worker."""
        process = slot.process
        was = slot.begin_stop()
        if was is None:
            return process
        unloaded = failure or Failure("model_unloaded", f"Model '{slot.id}' was unloaded: {reason}.", 503)
        self.sockets.fail_inflight(slot, unloaded)
        if was in STARTING or not self.table.accepting:
            self.sockets.give_up(slot, unloaded)
        if process is not None:
            self.sockets.shutdown_worker(slot)
        return process

    async def finish_stop(self, slot: WorkerSlot, process: WorkerProcess | None) -> None:
        if process is not None:
            await process.terminate(self.timeouts.stop_grace)
        slot.on_stopped(process)

    async def stop_worker(self, slot: WorkerSlot, reason: str) -> int:
        """End the worker now; returns the bytes its accounting held, released once it is gone."""
        freed = slot.footprint if slot.process is not None else 0
        await self.finish_stop(slot, self.begin_stop(slot, reason))
        return freed

    def stop_later(self, slot: WorkerSlot, reason: str, task: str) -> None:
        self.table.spawn(self.stop_worker(slot, reason), f"{task}:{slot.id}")

    def evict(self, slot: WorkerSlot, reason: str) -> None:
        """Stop now, synchronously as far as requests are concerned; the reaping runs in a task."""
        slot.evictions += 1
        process = self.begin_stop(slot, reason)
        self.table.spawn(self.finish_stop(slot, process), f"evict:{slot.id}")

    def drain(self, slot: WorkerSlot) -> None:
        """Take no new requests now; end the worker once its requests are done (an eviction:
        a busy worker's requests are never cut short to make room)."""
        slot.evictions += 1
        slot.begin_drain()
        self.table.spawn(self.drain_and_stop(slot, None), f"drain:{slot.id}")

    async def drain_and_stop(self, slot: WorkerSlot, force_after: float | None) -> tuple[str, int]:
        """Take no new requests, let the in-flight ones finish, then end the worker.

        With `force_after`, requests still running after that many seconds are ended with an
        error (an administrator's unload); without it the worker simply ends when they are done.
        """
        slot.begin_drain()
        outcome = "drained"
        if slot.inflight:
            slot.drained = asyncio.Event()
            try:
                await asyncio.wait_for(slot.drained.wait(), force_after)
            except TimeoutError:
                outcome = "forced"
        return outcome, await self.stop_worker(slot, "drained" if outcome == "drained" else
                                               f"its requests did not finish within {force_after:g} s")

    def kill_hung(self, slot: WorkerSlot, silent: float) -> str:
        """No word for too long with requests in flight: the worker is stuck; no grace for it.
        Returns why, for the caller to report as a crash (`CrashListener.failed`)."""
        reason = f"sent nothing for {silent:.1f} s with requests in flight (server.progress_timeout)"
        log.error("model %s: worker %s; killing it", slot.id, reason)
        hung = Failure("worker_hung", f"The worker for model '{slot.id}' {reason} and was killed.", 500)
        process = self.begin_stop(slot, reason, hung)
        if process is not None:
            process.signal_group(signal.SIGKILL)
        self.table.spawn(self.finish_stop(slot, process), f"kill:{slot.id}")
        return f"the worker {reason}"
