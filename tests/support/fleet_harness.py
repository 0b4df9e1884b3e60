"""An in-process supervisor wired to fake worker subprocesses, for the supervisor's own logic.

Everything real except MLX: real worker processes (tests/support/fake_worker.py), real ZeroMQ sockets,
the router's real FleetClient. Timeouts are injected, so a test of draining or idle TTLs takes
milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from mlx_fleet.config import FleetConfig, MemoryConfig, ModelConfig
from mlx_fleet.protocol import ChatInput, Done, Failure, Generate, Kind, Message, Sampling, decode_delta, decode_end, encode
from mlx_fleet.runtime import Endpoints, make_runtime_dir, remove_runtime_dir
from mlx_fleet.units import Duration, MemoryBudget
from mlx_fleet.router.fleet.client import FleetClient, RequestStream
from mlx_fleet.supervisor.fleet import Supervisor
from mlx_fleet.supervisor.memory.sizes import Remembered, tree_rss
from mlx_fleet.supervisor.timeouts import Timeouts

ROOT = Path(__file__).resolve().parents[2]
FAKE_WORKER = Path(__file__).resolve().parent / "fake_worker.py"
MiB = 2**20
FAST = Timeouts(load=10.0, stop_grace=0.5, drain=2.0, parent_check=0.5, housekeeping=0.05, progress=5.0,
                backoff=0.05, backoff_max=0.2)


class FakeLauncher:
    """Starts tests/support/fake_worker.py with per-model switches; counts spawns (of model workers, not
    spares). `spare_flags`: the switches of the 1st, 2nd, ... spare (the last repeats); None: no spares."""

    def __init__(self, flags: dict[str, list[str]], sink: str, spare_flags: list[list[str]] | None = None) -> None:
        self.flags = flags
        self.sink = sink
        self.spare_flags = spare_flags
        self.spawned: list[str] = []
        self.spares: list[str] = []  # identities of the spares started
        self.logs = None  # worker output to the test's stderr

    def _base(self, identity: str, endpoint: str) -> list[str]:
        return [sys.executable, str(FAKE_WORKER), "--identity", identity, "--endpoint", endpoint,
                "--sink", self.sink, "--parent-pid", str(os.getpid())]

    def argv(self, model: ModelConfig, identity: str, endpoint: str) -> list[str]:
        self.spawned.append(model.id)
        return [*self._base(identity, endpoint), *self.flags.get(model.id, [])]

    def spare_argv(self, identity: str, endpoint: str) -> list[str] | None:
        if self.spare_flags is None:
            return None
        flags = self.spare_flags[min(len(self.spares), len(self.spare_flags) - 1)]
        self.spares.append(identity)
        return [*self._base(identity, endpoint), "--spare", "--model-flags", json.dumps(self.flags), *flags]

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT)}


class Fleet:
    def __init__(self, supervisor: Supervisor, client: FleetClient, launcher: FakeLauncher) -> None:
        self.supervisor, self.client, self.launcher = supervisor, client, launcher

    def slot(self, model: str):
        return self.supervisor.ctx.table.slots[model]

    def open(self, model: str, max_tokens: int = 64) -> RequestStream:
        request = Generate(ChatInput((Message("user", "hi"),)), Sampling(max_tokens=max_tokens))
        return self.client.open(model, encode(request))

    async def finish(self, stream: RequestStream, timeout: float = 10.0) -> tuple[str, Done | Failure]:
        texts: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                for kind, body in await stream.take():
                    if kind == Kind.DELTA:
                        texts.append(decode_delta(body).text)
                    else:
                        return "".join(texts), decode_end(body)

    async def ask(self, model: str, max_tokens: int = 64, timeout: float = 10.0) -> tuple[str, Done | Failure]:
        """One request, answered, and counted by the supervisor (its END copy travels separately)."""
        stream = self.open(model, max_tokens)
        answer = await self.finish(stream, timeout)
        await until(lambda: stream.rid not in self.supervisor.ctx.table.routes)
        return answer

    def states(self) -> dict[str, str]:
        return {m: str(s.state) for m, s in self.supervisor.ctx.table.slots.items()}


@asynccontextmanager
async def fleet(models: dict[str, list[str]], *, budget: int = 10 * 1024 * MiB, max_models: int = 8,
                policy: str = "lru", idle_ttl: str = "0", preload: tuple[str, ...] = (),
                timeouts: Timeouts = FAST, state_dir: Path | None = None,
                spares: int = 0, spare_flags: list[list[str]] | None = None,
                probe: Callable[[int], int] = tree_rss) -> AsyncIterator[Fleet]:
    """`spares`: warm spares (fake ones) to keep; `spare_flags`: the switches of each in turn."""
    config = FleetConfig(
        memory=MemoryConfig(policy=policy, budget=MemoryBudget(str(budget)), max_models=max_models,
                            idle_ttl=Duration(idle_ttl), spares=spares),
        models=[ModelConfig(id=m, path=f"/nonexistent/{m}", type="text", preload=m in preload) for m in models],
    )
    runtime = make_runtime_dir()
    endpoints = Endpoints(runtime)
    launcher = FakeLauncher(models, endpoints.sink, (spare_flags or [[]]) if spares else None)
    remembered = Remembered(state_dir / "measured.json" if state_dir else Path(tempfile.mkdtemp()) / "m.json")
    supervisor = Supervisor(config, endpoints.frontend, endpoints.backend, launcher, timeouts=timeouts,
                            remembered=remembered, budget=budget, probe=probe)
    task = asyncio.create_task(supervisor.run())
    client = FleetClient(endpoints.frontend, endpoints.sink)
    client.start()
    try:
        yield Fleet(supervisor, client, launcher)
    finally:
        await supervisor.shutdown()
        await task
        await client.close()
        remove_runtime_dir(runtime)


async def until(predicate, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Wait for a condition the supervisor reaches asynchronously; fail loudly if it never does."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)
