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
from mlx_fleet.state.keys import exposure_problem

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
    for name, text in (("status", "show every model's state and memory, and the pool's"),
                       ("load", "load a model (if needed) and pin it"),
                       ("unload", "drain a model's requests and end its worker")):
        cmd = sub.add_parser(name, help=text)
        if name != "status":
            cmd.add_argument("model")
        if name == "unload":
            cmd.add_argument("--force", action="store_true", help="end it now; in-flight requests get an error")
        _client_options(cmd)
    models = sub.add_parser("models", help="the model catalog: list, rescan, enable, disable, set a tier")
    actions = models.add_subparsers(dest="action")
    for name, text, operands in (("list", "every model in the catalog (the default)", ()),
                                 ("scan", "look at the scan folders and the hub cache again", ()),
                                 ("enable", "serve a disabled model again", ("model",)),
                                 ("disable", "stop serving a model (and unload it)", ("model",)),
                                 ("tier", "put a model in a tier", ("model", "tier"))):
        action = actions.add_parser(name, help=text)
        for operand in operands:
            action.add_argument(operand)
        _client_options(action, inherited=True)
    profile = sub.add_parser("profile", help="named sets of models to keep loaded")
    actions = profile.add_subparsers(dest="action")
    _client_options(actions.add_parser("list", help="every profile, and which one is active (the default)"),
                    inherited=True)
    use = actions.add_parser("use", help="load and pin a profile's models, unpinning the previous profile's")
    use.add_argument("name")
    _client_options(use, inherited=True)
    for cmd in (models, profile):
        _client_options(cmd)
    from mlx_fleet.cli import ops_commands

    ops_commands.add_commands(sub, _client_options)
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("models", "profile"):
        from mlx_fleet.cli import catalog_commands

        return catalog_commands.run(args)
    if args.command in ops_commands.COMMANDS:
        return ops_commands.COMMANDS[args.command](args)
    from mlx_fleet.cli import fleet_commands

    return fleet_commands.run(args)


def _client_options(cmd: argparse.ArgumentParser, inherited: bool = False) -> None:
    """Where the server is, and how to print its answer: every command that talks to one. A
    sub-command's own copies default to nothing, so they never undo what its parent was given."""
    defaults = {"url": os.environ.get("MLX_FLEET_URL", "http://127.0.0.1:8000"),
                "admin_key": os.environ.get("MLX_FLEET_SERVER_ADMIN_KEY", ""), "json": False}
    if inherited:
        defaults = dict.fromkeys(defaults, argparse.SUPPRESS)
    cmd.add_argument("--url", default=defaults["url"],
                     help="the server (default: $MLX_FLEET_URL or http://127.0.0.1:8000)")
    cmd.add_argument("--admin-key", default=defaults["admin_key"], help="default: $MLX_FLEET_SERVER_ADMIN_KEY")
    cmd.add_argument("--json", action="store_true", default=defaults["json"], help="print the raw JSON answer")


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
    exposed = exposure_problem(config.server)
    if exposed is not None:
        print(f"mlx-fleet: {args.config or 'the configuration'}: {exposed}", file=sys.stderr)
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
    from mlx_fleet.router.app import create_app

    started = time.time()
    runtime = make_runtime_dir()
    endpoints = Endpoints(runtime)
    config_json = runtime / "config.json"
    config_json.write_bytes(encode_config(config))
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "mlx_fleet.supervisor", "--config-json", str(config_json),
         "--runtime-dir", str(runtime), "--parent-pid", str(os.getpid())],
        # Ctrl-C reaches us, and we stop it in order; same session: see supervisor/lifecycle/process.py
        process_group=0,
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

    from mlx_fleet.router.app import begin_drain

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
    from mlx_fleet.supervisor.workers.process import kill_all

    kill_all(tree)

