"""`python -m mlx_fleet.worker`: one process that serves one model (`serve_loop.Worker`).

OpenBLAS is loaded before anything imports MLX; the worker's life (spare wait, load, serve loop)
is `serve_loop`'s.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from mlx_fleet.worker.blas import preload_blas

preload_blas()  # before anything imports mlx.core, or it is too late to matter

from mlx_fleet.worker.serve_loop import Worker  # noqa: E402


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mlx_fleet.worker")
    p.add_argument("--spare", action="store_true", help="import MLX's libraries, then wait to be assigned a model")
    p.add_argument("--model-id")
    p.add_argument("--path")
    p.add_argument("--type", default="text", choices=["text", "vision", "embeddings"])
    p.add_argument("--endpoint", required=True, help="the supervisor's socket (control plane)")
    p.add_argument("--sink", required=True, help="the router's sink (data plane: stream frames)")
    p.add_argument("--identity", required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--prompt-cache-bytes", type=int, default=512 * 2**20)
    p.add_argument("--prompt-cache-disk", type=int, default=0, help="the fleet's bound on KV blocks on disk; 0: off")
    p.add_argument("--prompt-cache-dir", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if not args.spare and not (args.model_id and args.path):
        print("python -m mlx_fleet.worker: --model-id and --path are required (or --spare)", file=sys.stderr)
        return 2
    worker = Worker(args)

    def stop(signum, frame) -> None:
        worker.running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        if args.spare and not worker.wait_for_model():
            return 0
        if worker.load():
            worker.serve()
            return 0
        return 1
    finally:
        worker.close()


if __name__ == "__main__":
    sys.exit(main())
