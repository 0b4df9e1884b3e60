"""Server subprocesses for the tests and the benchmarks: `mlx-fleet serve` as a user runs it, or any
other HTTP server (the benchmarks' peer and bare app), as a process tree to query and to kill.

A plain module rather than conftest, so that tests import it by a name no other conftest shares.
The benchmarks import it too, on machines that have only the server's own dependencies
(tests/bench/gpu.sh): so the `openai` client is imported only by the helper that builds one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx
import psutil

if TYPE_CHECKING:
    import openai

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server subprocess in its own session: started, waited for, stopped with its whole tree.

    `kill_leftovers`: after the server exits, whatever of its tree outlived it (it should not) is
    given 10 s and then killed. The benchmarks want that, so that a stray process never weighs on
    the next measurement; the tests leave it off, because what outlives a server is theirs to find.
    """

    def __init__(self, argv: list[str], port: int, log_path: Path, env: dict[str, str] | None = None, *,
                 name: str = "server", ready_path: str = "/health", kill_leftovers: bool = False,
                 cwd: Path = ROOT) -> None:
        self.name, self.port, self.ready_path, self.kill_leftovers = name, port, ready_path, kill_leftovers
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> Self:
        """Until `ready_path` answers 200; an exit or the deadline raises, with the log's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + self.ready_path, timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout} s:\n{self.log()}")

    def log(self, tail: int = 4000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def tree(self) -> list[psutil.Process]:
        """The server process and every descendant (for serve: the supervisor, the workers)."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` and wait; past `timeout`, SIGKILL the server's whole process group. Returns its
        exit status."""
        tree = self.tree() if self.kill_leftovers else []
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._kill_leftovers([p for p in tree if p.pid != self.proc.pid])
        self._log.close()
        return self.proc.returncode

    def _kill_leftovers(self, processes: list[psutil.Process]) -> None:
        _, left = psutil.wait_procs(processes, timeout=10)
        for p in left:
            with contextlib.suppress(psutil.Error):
                print(f"[{self.name}] killing leftover process {p.pid} {p.name()}")
                p.kill()


class FleetServer(ServerProcess):
    """`mlx-fleet serve` as a user runs it: a subprocess tree we can query and kill.

    `python`: another interpreter whose `mlx_fleet` is another checkout (a benchmark's baseline); it
    runs in the state folder, so this repository's folders are not on its import path."""

    def __init__(self, config: Path | None, state_dir: Path, env: dict[str, str] | None = None,
                 log_path: Path | None = None, *, port: int | None = None, kill_leftovers: bool = False,
                 python: str | None = None) -> None:
        port = port or free_port()
        argv = [python or sys.executable, "-m", "mlx_fleet.cli", "serve", "--port", str(port)]
        if config is not None:
            argv += ["--config", str(config)]
        state_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(argv, port, log_path or state_dir / f"serve-{port}.log",
                         {"MLX_FLEET_SERVER_STATE_DIR": json.dumps(str(state_dir)), **(env or {})},
                         name="mlx-fleet serve", kill_leftovers=kill_leftovers,
                         cwd=ROOT if python is None else state_dir)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (zombies count as gone: only their exit status is left)."""
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def strict_client(base_url: str, api_key: str = "none", **kwargs) -> openai.OpenAI:
    """The official client, checking every response against OpenAI's own schema."""
    import openai

    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60,
                         _strict_response_validation=True, **kwargs)


def write_config(path: Path, models: Mapping[str, Path | str], extra: str = "", *,
                 server: Mapping[str, Any] | None = None, memory: Mapping[str, Any] | None = None) -> Path:
    """A fleet's TOML config naming `models` (id -> path, text models): `extra` (TOML text, as the
    tests write it) first, then the `[server]` and `[memory]` tables of `server` and `memory` (key ->
    value, as the benchmarks give them)."""
    lines = [extra] if extra else []
    for section, values in (("server", server), ("memory", memory)):
        if values:
            lines += [f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items()), ""]
    for model_id, model_path in models.items():
        lines += ["[[models]]", f"id = {_toml_value(model_id)}", f"path = {_toml_value(str(model_path))}",
                  'type = "text"', ""]
    path.write_text("\n".join(lines))
    return path


def _toml_value(value: Any) -> str:
    """A TOML literal of a bool, a number, a string, or a list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def admin(server: FleetServer, verb: str, model: str = "", **params) -> httpx.Response:
    """`verb` "status", or "load"/"unload" of `model` (params: e.g. force=true), on the admin API."""
    if verb == "status":
        return httpx.get(f"{server.base_url}/admin/models/status", timeout=60)
    return httpx.post(f"{server.base_url}/admin/models/{verb}/{model}", params=params, timeout=120)


def by_id(status: dict) -> dict[str, dict]:
    return {m["id"]: m for m in status["models"]}


def chat_text(client: openai.OpenAI, stream: bool, **request) -> tuple[str, list[str]]:
    """A chat reply's text and its finish reasons, streamed or not (the two must agree)."""
    if stream:
        chunks = list(client.chat.completions.create(stream=True, **request))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    r = client.chat.completions.create(**request)
    return r.choices[0].message.content, [r.choices[0].finish_reason]
