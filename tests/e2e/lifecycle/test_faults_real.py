"""Faults with real MLX workers: a worker killed mid-stream, a client that leaves, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from fleet_server import FleetServer, strict_client, wait_gone, write_config

LONG = [{"role": "user", "content": "Tell me a very long story."}]


def status(server: FleetServer) -> dict:
    return {m["id"]: m for m in httpx.get(f"{server.base_url}/admin/models/status", timeout=30).json()["models"]}


@pytest.fixture
def server(tmp_path: Path, tiny_lm: Path):
    config = write_config(tmp_path / "fleet.toml", {"tiny": tiny_lm}, '[server]\ndrain_timeout = "1s"\n')
    s = FleetServer(config, tmp_path / "state").wait_ready()
    yield s
    s.stop()


def test_worker_killed_mid_stream_gives_an_error_event_then_a_new_worker(server: FleetServer) -> None:
    client = strict_client(server.base_url)
    client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    pid = status(server)["tiny"]["pid"]
    stream = client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2000, stream=True,
                                            temperature=0)
    received = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            received.append(chunk)
            if len(received) == 3:
                os.kill(pid, signal.SIGKILL)
    assert len(received) >= 3
    assert all(c.choices[0].finish_reason is None for c in received if c.choices)  # never looks finished
    assert "tiny" in str(e.value) and "SIGKILL" in str(e.value)
    r = client.chat.completions.create(model="tiny", messages=LONG, max_tokens=4)
    assert r.usage.completion_tokens == 4
    assert status(server)["tiny"]["pid"] not in (None, pid)


def test_worker_killed_before_first_byte_is_500_worker_crashed(server: FleetServer) -> None:
    client = strict_client(server.base_url)
    client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    pid = status(server)["tiny"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # frozen: the request waits in its queue...
    result: dict = {}

    def call() -> None:
        try:
            client.chat.completions.create(model="tiny", messages=LONG, max_tokens=4)
        except openai.APIStatusError as exc:
            result["error"] = exc

    t = threading.Thread(target=call)
    t.start()
    deadline = time.monotonic() + 10
    while status(server)["tiny"]["in_flight"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)  # ...and dies before it sends anything
    t.join(30)
    error = result["error"]
    assert isinstance(error, openai.InternalServerError) and error.status_code == 500
    assert error.body["code"] == "worker_crashed" and "tiny" in error.body["message"]
    assert error.response.headers.get("x-should-retry") == "false"


def test_client_disconnect_stops_generation_and_frees_the_slot(server: FleetServer) -> None:
    body = {"model": "tiny", "messages": LONG, "max_tokens": 1900, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(5):
            next(lines)
    # the connection is closed here, mid-stream
    deadline = time.monotonic() + 5
    while status(server)["tiny"]["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.02)
    model = status(server)["tiny"]
    assert model["in_flight"] == 0 and model["state"] == "ready"
    assert model["tokens_generated"] < 1900  # cancelled, not run to the end
    started = time.monotonic()
    strict_client(server.base_url).chat.completions.create(model="tiny", messages=LONG, max_tokens=4)
    assert time.monotonic() - started < 5


def test_sigterm_drains_then_ends_the_rest_and_exits_0(server: FleetServer) -> None:
    client = strict_client(server.base_url)
    client.chat.completions.create(model="tiny", messages=LONG, max_tokens=2)
    tree = server.tree()
    long_stream = client.chat.completions.create(model="tiny", messages=LONG, max_tokens=1900, stream=True,
                                                 temperature=0)
    first = next(iter(long_stream))
    assert first.choices[0].delta.role == "assistant"
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(openai.APIError) as e:  # it cannot finish within the 1 s drain: a clean error event
        for chunk in long_stream:
            assert chunk.choices == [] or chunk.choices[0].finish_reason is None
    assert "shutting down" in str(e.value)
    assert server.proc.wait(30) == 0
    assert time.monotonic() - started < 15
    assert wait_gone(tree, 10) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/health", timeout=2)
