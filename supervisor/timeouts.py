"""Every wait the supervisor makes, in one place, so tests shrink them to milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

from mlx_fleet.config import ServerConfig


@dataclass(frozen=True)
class Timeouts:
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
