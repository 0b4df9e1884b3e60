"""Ending workers: stops, drains and kills the fleet decides on, and exits it did not.

A stop has a synchronous half (`begin_stop`: from that instant no request can reach the worker)
and an awaited half (`finish_stop`: the process group is ended and reaped, and only then does its
memory leave the accounting). A drain takes no new requests and stops the worker when its last
request ends. An exit nobody asked for is a crash: its requests fail and the model backs off.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from mlx_fleet.protocol import Failure
from mlx_fleet.supervisor.control.dispatch import Dispatcher
from mlx_fleet.supervisor.lifecycle.process import WorkerProcess
from mlx_fleet.supervisor.lifecycle.slot_table import SlotTable
from mlx_fleet.supervisor.lifecycle.slot import STARTING, WorkerSlot
from mlx_fleet.supervisor.lifecycle.state import WorkerState
from mlx_fleet.supervisor.timeouts import Timeouts

log = logging.getLogger("mlx_fleet.supervisor")
S = WorkerState


class Stopper:
    def __init__(self, registry: SlotTable, dispatch: Dispatcher, timeouts: Timeouts,
                 load_failed: Callable[[WorkerSlot, str], None], failed: Callable[[WorkerSlot, str], None]) -> None:
        """`load_failed`: a load ended without a worker; `failed`: a worker crashed or hung (both
        the loader's: it backs the model off, and brings a pinned one back)."""
        self.registry, self.dispatch, self.timeouts = registry, dispatch, timeouts
        self.load_failed, self.failed = load_failed, failed

    def begin_stop(self, slot: WorkerSlot, reason: str, failure: Failure | None = None) -> WorkerProcess | None:
        """The synchronous half of a stop: from here on no request can reach this worker."""
        process = slot.process
        was = slot.begin_stop()
        if was is None:
            return process
        unloaded = failure or Failure("model_unloaded", f"Model '{slot.id}' was unloaded: {reason}.", 503)
        self.dispatch.fail_inflight(slot, unloaded)
        if was in STARTING or not self.registry.accepting:
            self.dispatch.give_up(slot, unloaded)
        if process is not None:
            self.dispatch.shutdown_worker(slot)
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
        self.registry.spawn(self.stop_worker(slot, reason), f"{task}:{slot.id}")

    def evict(self, slot: WorkerSlot, reason: str) -> None:
        """Stop now, synchronously as far as requests are concerned; the reaping runs in a task."""
        slot.evictions += 1
        process = self.begin_stop(slot, reason)
        self.registry.spawn(self.finish_stop(slot, process), f"evict:{slot.id}")

    def drain(self, slot: WorkerSlot) -> None:
        """Take no new requests now; end the worker once its requests are done (an eviction:
        a busy worker's requests are never cut short to make room)."""
        slot.evictions += 1
        slot.begin_drain()
        self.registry.spawn(self.drain_and_stop(slot, None), f"drain:{slot.id}")

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

    def kill_hung(self, slot: WorkerSlot, silent: float) -> None:
        """No word for too long with requests in flight: the worker is stuck; no grace for it."""
        reason = f"sent nothing for {silent:.1f} s with requests in flight (server.progress_timeout)"
        log.error("model %s: worker %s; killing it", slot.id, reason)
        hung = Failure("worker_hung", f"The worker for model '{slot.id}' {reason} and was killed.", 500)
        process = self.begin_stop(slot, reason, hung)
        if process is not None:
            process.signal_group(signal.SIGKILL)
        self.failed(slot, f"the worker {reason}")
        self.registry.spawn(self.finish_stop(slot, process), f"kill:{slot.id}")

    async def watch_exit(self, slot: WorkerSlot, process: WorkerProcess, identity: bytes) -> None:
        """Runs for the life of every worker process: an exit nobody asked for is a crash."""
        status = await process.exited
        self.registry.by_identity.pop(identity, None)
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
        self.dispatch.fail_inflight(slot, Failure(
            "worker_crashed", f"The worker for model '{slot.id}' {status.describe()} while handling the request.", 500))
        self.dispatch.fail_pending(slot, Failure(
            "worker_crashed", f"The worker for model '{slot.id}' {status.describe()}.", 500))
