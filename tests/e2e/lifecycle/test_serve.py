"""`mlx-fleet serve` as a process tree: starts whole, answers, and leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_server import FleetServer, alive, strict_client, wait_gone, write_config


def _cmdline(process: psutil.Process) -> list[str]:
    """A process's command line, or nothing for one that has just exited (a spare being replaced)."""
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def _tree_with_worker(server: FleetServer) -> list[psutil.Process]:
    client = strict_client(server.base_url)
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    tree = server.tree()
    names = [" ".join(_cmdline(p)) for p in tree]
    assert any("-m mlx_fleet.supervisor" in n for n in names) and any("-m mlx_fleet.worker" in n for n in names), names
    return tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_leaves_no_process_behind(tmp_path: Path, tiny_lm: Path, sig: int) -> None:
    server = FleetServer(write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}), tmp_path / "state").wait_ready()
    try:
        tree = _tree_with_worker(server)
        assert len(tree) >= 3  # serve, supervisor, the worker (and the warm spare, if it is up)
        assert server.stop(sig) == 0
        assert wait_gone(tree, 10) == []
    finally:
        server.stop()


def test_supervisor_killed_router_answers_503_and_workers_exit(tmp_path: Path, tiny_lm: Path) -> None:
    server = FleetServer(write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}), tmp_path / "state").wait_ready()
    try:
        tree = _tree_with_worker(server)
        supervisor = next(p for p in tree if "-m mlx_fleet.supervisor" in " ".join(_cmdline(p)))
        workers = [p for p in tree if "-m mlx_fleet.worker" in " ".join(_cmdline(p))]
        supervisor.kill()
        assert wait_gone(workers, 10) == [], "workers must notice their supervisor died and exit"
        started = time.monotonic()
        r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=10,
                       json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and r.json()["error"]["code"] == "supervisor_unavailable"
        assert time.monotonic() - started < 5
        assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 503
    finally:
        server.stop()


@pytest.mark.parametrize("text,expect", [
    ("[server]\nprot = 1\n", "server.prot: unknown key"),
    ("[memory]\nbudget = \"lots\"\n[[models]]\nid = \"a\"\npath = \"/x\"\n", "memory.budget"),
    ("[server]\nport = 1\n", "models: at least one"),
    ("[[models]]\nid = \"a\"\n", "models.0.path"),
    ("[server]\nhost = \"0.0.0.0\"\n[[models]]\nid = \"a\"\npath = \"/x\"\n", "server.host"),
])
def test_invalid_config_refuses_to_start(tmp_path: Path, text: str, expect: str) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(text)
    r = subprocess.run([sys.executable, "-m", "mlx_fleet.cli", "serve", "--config", str(config)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert str(config) in r.stderr and expect in r.stderr, r.stderr


def test_default_model_answers_paris(tmp_path: Path) -> None:
    """No config, no network: the SmolLM2 wheel's GGUF is converted once and served."""
    server = FleetServer(None, tmp_path / "state").wait_ready()
    try:
        client = strict_client(server.base_url)
        assert [m.id for m in client.models.list().data][0] == "smollm2"
        # as in the README: no temperature given (the server's default is greedy)
        r = client.chat.completions.create(model="smollm2", max_tokens=20, messages=[
            {"role": "user", "content": "What is the capital of France?"}])
        assert "Paris" in r.choices[0].message.content
        assert any((tmp_path / "state" / "models").iterdir()), "the converted model is cached"
    finally:
        assert server.stop() == 0
    assert alive(server.tree()) == []


def _get_on(sock, port: int) -> bytes:
    """One whole response (status line, headers, Content-Length body) read off a kept-alive socket."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_idle_keep_alive_connections_live_as_configured(tmp_path: Path, tiny_lm: Path) -> None:
    """Clients' pools (httpx: 5 s) must expire idle connections before the server closes them;
    the server's own limit is `server.keep_alive`, here shortened to 2 s to watch it act."""
    import socket

    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}, extra='[server]\nkeep_alive = "2s"\n')
    server = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            assert _get_on(sock, server.port).startswith(b"HTTP/1.1 200")
            time.sleep(1.0)  # idle, but within the limit: the connection is still there
            assert _get_on(sock, server.port).startswith(b"HTTP/1.1 200")
            time.sleep(3.0)  # past it: the server has closed its end
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536) == b""
    finally:
        server.stop()
