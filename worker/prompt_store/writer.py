"""The thread that writes snapshotted blocks, so a turn's disk writes never hold up a token.

It gets plain bytes only (the engine's thread snapshots them): MLX calls on another thread abort on
Metal. A full queue drops the turn's blocks rather than wait: they are a cache.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from dataclasses import dataclass

from mlx_fleet.worker.prompt_store.block_file import Block
from mlx_fleet.worker.prompt_store.store import BlockStore

log = logging.getLogger(__name__)
QUEUE_TURNS = 16
EXIT_WAIT_SECONDS = 5.0  # an evicted or stopped worker finishes its last turn's blocks, within the stop grace


@dataclass(frozen=True, slots=True)
class Job:
    blocks: list[Block]   # the chain's blocks not on disk yet, in order
    chain: list[str]      # the whole chain's keys, touched once the blocks are written


class BlockWriter:
    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self.pending: set[str] = set()  # keys queued, not written yet: not snapshotted twice
        self._jobs: queue.Queue[Job] = queue.Queue(QUEUE_TURNS)
        threading.Thread(target=self._run, name="prompt-cache-writer", daemon=True).start()
        atexit.register(self.flush, EXIT_WAIT_SECONDS)

    def submit(self, job: Job) -> None:
        keys = {b.key for b in job.blocks}
        self.pending.update(keys)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.pending.difference_update(keys)
            log.warning("prompt cache: the disk writer is behind; %d blocks not kept", len(job.blocks))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued block is written, or `timeout` seconds (tests, and a worker's exit)."""
        done = self._jobs.all_tasks_done
        with done:
            done.wait_for(lambda: not self._jobs.unfinished_tasks, timeout)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                for block in job.blocks:
                    self.store.write(block)
                self.store.touch(job.chain)
                self.store.evict()
            except OSError as e:
                log.warning("prompt cache: writing blocks failed: %s", e)
            finally:
                self.pending.difference_update(b.key for b in job.blocks)
                self._jobs.task_done()
