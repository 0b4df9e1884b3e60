"""The worker lifecycle: a closed set of states and the one table of legal moves between them."""

from __future__ import annotations

import enum
import logging

log = logging.getLogger("mlx_fleet.supervisor")


class WorkerState(enum.StrEnum):
    STOPPED = "stopped"    # no process
    STARTING = "starting"  # room reserved; waiting for room to free, a spare, or the process to connect
    LOADING = "loading"    # connected, importing libraries and loading weights
    READY = "ready"        # loaded, nothing in flight
    BUSY = "busy"          # loaded, requests in flight
    DRAINING = "draining"  # takes no new requests; ends when the in-flight ones have
    STOPPING = "stopping"  # asked to exit; waiting for the process to be reaped
    FAILED = "failed"      # the last process crashed or could not load; see last_error

    @property
    def serving(self) -> bool:
        return self in (WorkerState.READY, WorkerState.BUSY)

    @property
    def has_process(self) -> bool:
        return self not in (WorkerState.STOPPED, WorkerState.FAILED)


S = WorkerState
_ALLOWED: dict[WorkerState, frozenset[WorkerState]] = {
    S.STOPPED: frozenset({S.STARTING}),
    S.STARTING: frozenset({S.LOADING, S.STOPPING, S.STOPPED, S.FAILED}),  # -> stopped: no room came
    S.LOADING: frozenset({S.READY, S.STOPPING, S.FAILED}),
    S.READY: frozenset({S.BUSY, S.DRAINING, S.STOPPING, S.FAILED}),
    S.BUSY: frozenset({S.READY, S.DRAINING, S.STOPPING, S.FAILED}),
    S.DRAINING: frozenset({S.STOPPING, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.FAILED: frozenset({S.STARTING, S.STOPPED}),
}


class InvalidTransition(RuntimeError):
    pass


class StateMismatch(RuntimeError):
    pass


class Lifecycle:
    """Holds one model's worker state; every change goes through `swap`, a compare-and-swap that
    checks the move against the table and logs it. There is no unconditional setter."""

    __slots__ = ("model_id", "_state")

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._state = S.STOPPED

    @property
    def state(self) -> WorkerState:
        return self._state

    def swap(self, expected: WorkerState | frozenset[WorkerState], new: WorkerState) -> WorkerState:
        """Move from `expected` (one state or any of several) to `new`; returns the old state."""
        old = self._state
        if old != expected and not (isinstance(expected, frozenset) and old in expected):
            raise StateMismatch(f"{self.model_id}: expected {expected}, found {old} (moving to {new})")
        if new not in _ALLOWED[old]:
            raise InvalidTransition(f"{self.model_id}: {old} -> {new} is not allowed")
        self._state = new
        # ready <-> busy flips on every request: worth a debug line, not an info line
        quiet = {old, new} <= {S.READY, S.BUSY}
        log.log(logging.DEBUG if quiet else logging.INFO, "model %s: %s -> %s", self.model_id, old, new)
        return old
