"""`python -m mlx_fleet.supervisor`: the fleet's one long-lived process, started by `mlx-fleet serve`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from mlx_fleet.catalog.catalog import Catalog
from mlx_fleet.catalog.store import CatalogStore
from mlx_fleet.config import decode_config
from mlx_fleet.heap import freeze_startup_heap
from mlx_fleet.runtime import Endpoints
from mlx_fleet.supervisor.fleet import Supervisor
from mlx_fleet.supervisor.workers.launcher import PromptCacheArgs, PythonWorkerLauncher
from mlx_fleet.supervisor.memory.sizes import Remembered


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlx_fleet.supervisor")
    p.add_argument("--config-json", type=Path, required=True, help="the resolved config, written by serve")
    p.add_argument("--runtime-dir", type=Path, required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s")
    config = decode_config(args.config_json.read_bytes())
    endpoints = Endpoints(args.runtime_dir)
    state_dir = Path(config.server.state_dir).expanduser()
    launcher = PythonWorkerLauncher(state_dir, config.server.allow_downloads, PromptCacheArgs.of(config),
                                    endpoints.sink)

    async def run() -> None:
        catalog = Catalog(config, CatalogStore(state_dir))
        found = catalog.rescan()
        logging.info("catalog: %d models (%d found on disk)", len(catalog.entries), found.models_found)
        supervisor = Supervisor(config, endpoints.frontend, endpoints.backend, launcher, parent_pid=args.parent_pid,
                                remembered=Remembered(state_dir / "measured.json"), catalog=catalog)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(supervisor.shutdown()))
        freeze_startup_heap()
        await supervisor.run()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
