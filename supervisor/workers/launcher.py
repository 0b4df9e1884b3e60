"""How a worker process is started: its command line, its environment, and the spawn itself.

The one place a worker comes into being, so whatever should be true of every worker (where its
output goes, what it may download) is decided here. The fault tests swap in a fake worker.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NamedTuple, Protocol

from mlx_fleet.config import FleetConfig, ModelConfig, prompt_cache_dir
from mlx_fleet.state.worker_logs import WorkerLogs, logs_dir
from mlx_fleet.supervisor.workers.process import WorkerProcess


class PromptCacheArgs(NamedTuple):
    """What a worker needs of `[prompt_cache]`: its memory tier's size, the fleet's disk bound
    (0: off) and the shared folder."""

    memory: int
    disk: int
    dir: str

    @classmethod
    def of(cls, config: FleetConfig) -> PromptCacheArgs:
        section = config.prompt_cache
        return cls(int(section.memory), int(section.disk), str(prompt_cache_dir(config)))


class Launcher(Protocol):
    """Builds a worker's command line; the fault tests swap in a fake worker here."""

    logs: WorkerLogs | None  # where workers' output goes; None: the supervisor's own stderr

    def argv(self, model: ModelConfig, identity: str, endpoint: str) -> list[str]: ...

    def spare_argv(self, identity: str, endpoint: str) -> list[str] | None:
        """A warm spare's command line, or None if this launcher has no spares."""

    def env(self) -> dict[str, str]: ...


async def launch(launcher: Launcher, argv: list[str], label: str) -> WorkerProcess:
    """Start one worker (or spare) process; its output goes to its model's log file (or, without
    log files, to the supervisor's stderr, prefixed)."""
    return await WorkerProcess.spawn(argv, launcher.env(), label, launcher.logs)


class PythonWorkerLauncher:
    """`python -m mlx_fleet.worker` with the same interpreter, offline unless the config allows downloads."""

    def __init__(self, state_dir: Path, allow_downloads: bool, prompt_cache: PromptCacheArgs, sink: str) -> None:
        self.logs: WorkerLogs | None = WorkerLogs(logs_dir(state_dir))
        self.sink = sink
        self.state_dir = state_dir
        self.allow_downloads = allow_downloads
        self.prompt_cache = prompt_cache

    def argv(self, model: ModelConfig, identity: str, endpoint: str) -> list[str]:
        return [*self._common(identity, endpoint), "--model-id", model.id, "--path", model.path,
                "--type", model.type if model.type != "auto" else "text"]

    def spare_argv(self, identity: str, endpoint: str) -> list[str] | None:
        return [*self._common(identity, endpoint), "--spare"]

    def _common(self, identity: str, endpoint: str) -> list[str]:
        return [
            sys.executable, "-m", "mlx_fleet.worker",
            "--endpoint", endpoint,
            "--sink", self.sink,
            "--identity", identity,
            "--parent-pid", str(os.getpid()),
            "--state-dir", str(self.state_dir),
            "--prompt-cache-bytes", str(self.prompt_cache.memory),
            "--prompt-cache-disk", str(self.prompt_cache.disk),
            "--prompt-cache-dir", self.prompt_cache.dir,
        ]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if not self.allow_downloads:
            env["HF_HUB_OFFLINE"] = "1"
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        return env
