"""`mlx-fleet`: serve the fleet, or talk to a running one.

`serve` is one process tree: this process runs the HTTP router (uvicorn) and is the parent of
the supervisor, which is the parent of every worker. Ctrl-C or SIGTERM stops uvicorn, then the
supervisor ends its workers; whatever is still alive after that is killed, so nothing is left
behind even if the supervisor itself hangs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mlx_fleet.config import ConfigError, encode_config, load_config

log = logging.getLogger("mlx_fleet")

SUPERVISOR_STOP_SECONDS = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlx-fleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start the supervisor and the HTTP router")
    serve.add_argument("--config", type=Path, help="fleet.toml (default: built-in models)")
    serve.add_argument("--host", help="overrides server.host")
    serve.add_argument("--port", type=int, help="overrides server.port")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", default=os.environ.get("MLX_FLEET_URL", "http://127.0.0.1:8000"),
                        help="the server (default: $MLX_FLEET_URL or http://127.0.0.1:8000)")
    remote.add_argument("--admin-key", default=os.environ.get("MLX_FLEET_SERVER_ADMIN_KEY", ""),
                        help="default: $MLX_FLEET_SERVER_ADMIN_KEY")
    remote.add_argument("--json", action="store_true", help="print the raw JSON answer")
    for name, text in (("status", "show every model's state and memory, and the pool's"),
                       ("load", "load a model (if needed) and pin it"),
                       ("unload", "drain a model's requests and end its worker")):
        cmd = sub.add_parser(name, help=text, parents=[remote])
        if name != "status":
            cmd.add_argument("model")
        if name == "unload":
            cmd.add_argument("--force", action="store_true", help="end it now; in-flight requests get an error")
    from mlx_fleet import ops_cli

    ops_cli.add_commands(sub, remote)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command == "keys":
        return ops_cli.run_keys(args)
    if args.command == "usage":
        return ops_cli.run_usage(args)
    if args.command == "logs":
        return ops_cli.run_logs(args)
    from mlx_fleet import admin_cli

    return admin_cli.run(args)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    environ = dict(os.environ)
    if args.host:
        environ["MLX_FLEET_SERVER_HOST"] = f'"{args.host}"'
    if args.port:
        environ["MLX_FLEET_SERVER_PORT"] = str(args.port)
    try:
        config = load_config(args.config, environ)
    except ConfigError as e:
        print(f"mlx-fleet: invalid configuration: {e}", file=sys.stderr)
        return 2

    # A stop signal at any moment, before uvicorn runs or re-raised by uvicorn after it drained,
    # unwinds through the `finally` below (which ends the supervisor and its workers) and exits 0:
    # "stopped on request", which launchd's KeepAlive (SuccessfulExit = false) relies on.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)

    import uvicorn

    from mlx_fleet.heap import freeze_startup_heap
    from mlx_fleet.runtime import Endpoints, make_runtime_dir, remove_runtime_dir

    DrainingServer = _draining_server()
    from router.app import create_app

    started = time.time()
    runtime = make_runtime_dir()
    endpoints = Endpoints(runtime)
    config_json = runtime / "config.json"
    config_json.write_bytes(encode_config(config))
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "--config-json", str(config_json),
         "--runtime-dir", str(runtime), "--parent-pid", str(os.getpid())],
        process_group=0,  # Ctrl-C reaches us, and we stop it in order; same session: see supervisor/process.py
    )
    try:
        app = create_app(config, endpoints, started, supervisor_alive=lambda: supervisor.poll() is None)
        drain = float(config.server.drain_timeout)
        server = DrainingServer(app, drain, uvicorn.Config(
            app, host=config.server.host, port=config.server.port, log_level=args.log_level,
            access_log=False, backlog=config.server.backlog, timeout_graceful_shutdown=drain + 5, lifespan="on",
            timeout_keep_alive=float(config.server.keep_alive),
        ))
        names = ", ".join(m.id for m in config.models)
        log.info("mlx-fleet: serving %s on http://%s:%d", names, config.server.host, config.server.port)
        freeze_startup_heap()
        server.run()
    finally:
        _stop_supervisor(supervisor)
        remove_runtime_dir(runtime)
    return 0


def _draining_server():
    import uvicorn

    from router.app import begin_drain

    class DrainingServer(uvicorn.Server):
        """uvicorn, but a stop signal first puts the app in drain mode (503 to new requests; the
        ones in flight get `drain` seconds, then a clean error) while uvicorn stops listening."""

        def __init__(self, app, drain: float, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.app, self.drain = app, drain

        def handle_exit(self, sig: int, frame) -> None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_soon(begin_drain, self.app, self.drain)
            super().handle_exit(sig, frame)

    return DrainingServer


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _stop_supervisor(supervisor: subprocess.Popen) -> None:
    """SIGTERM (it ends its workers first), then SIGKILL whatever of its tree is still alive."""
    try:
        tree = psutil.Process(supervisor.pid).children(recursive=True)
    except psutil.Error:
        tree = []
    if supervisor.poll() is None:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(SUPERVISOR_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.error("supervisor did not stop in %.0f s; killing it", SUPERVISOR_STOP_SECONDS)
            supervisor.kill()
            supervisor.wait()
    from supervisor.process import kill_all

    kill_all(tree)


if __name__ == "__main__":
    sys.exit(main())
