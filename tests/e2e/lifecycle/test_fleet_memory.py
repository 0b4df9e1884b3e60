"""The memory policy and the admin API through the real stack, with real MLX workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from fleet_server import FleetServer, admin, by_id, strict_client, write_config
from tiny_models import build_tiny_lm

MiB = 2**20


@pytest.fixture(scope="module")
def three_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("three")
    return {name: build_tiny_lm(root / name, seed=i) for i, name in enumerate(("a", "b", "c"))}


def ask(server: FleetServer, model: str) -> None:
    r = strict_client(server.base_url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=3, temperature=0)
    assert r.choices[0].finish_reason == "length"


def test_lru_with_a_measured_budget_evicts_b_not_a(tmp_path: Path, three_models: dict[str, Path]) -> None:
    state = tmp_path / "state"
    # First run: measure each model (remembered in the state directory, so the next run's
    # estimates are exact), then size a budget that holds two of them and not three.
    probe = FleetServer(write_config(tmp_path / "probe.toml", three_models), state).wait_ready()
    try:
        for model in three_models:
            ask(probe, model)
        measured = {k: v["memory"]["measured"] for k, v in by_id(admin(probe, "status").json()).items()}
    finally:
        probe.stop()
    budget = sum(measured.values()) - min(measured.values()) // 2
    config = write_config(tmp_path / "fleet.toml", three_models, f'[memory]\nbudget = "{budget}B"\n')
    server = FleetServer(config, state).wait_ready()
    try:
        for model in ("a", "b", "a"):
            ask(server, model)
        pid_b = by_id(admin(server, "status").json())["b"]["pid"]
        ask(server, "c")
        status = admin(server, "status").json()
        models = by_id(status)
        assert {k: m["state"] for k, m in models.items()} == {"a": "ready", "b": "stopped", "c": "ready"}
        assert models["b"]["memory"]["measured"] is None and models["b"]["pid"] is None
        assert not psutil.pid_exists(pid_b)
        assert status["pool"]["in_use"] <= status["pool"]["budget"] == budget
        assert models["c"]["memory"]["estimate_was_measured"]
    finally:
        server.stop()


def test_admin_load_pins_status_reports_and_unload_releases(tmp_path: Path, three_models: dict[str, Path]) -> None:
    config = write_config(tmp_path / "fleet.toml", three_models, '[memory]\nmax_models = 2\n')
    server = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        r = admin(server, "load", "a")
        assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["pinned"] is True
        loaded = r.json()  # the design documents' load reply, within ours
        assert (loaded["status"], loaded["model_id"], loaded["model_type"], loaded["preloaded"]) == \
            ("loaded", "a", "text-gen", True)
        assert loaded["size_gb"] > 0
        ask(server, "b")
        ask(server, "c")  # room for two: b (unpinned) goes, a (pinned) stays
        status = admin(server, "status").json()
        models = by_id(status)
        assert models["a"]["state"] == "ready" and models["b"]["state"] == "stopped"
        assert models["c"]["served"] == 1 and models["c"]["tokens_generated"] == 3
        for field in ("id", "type", "state", "pid", "memory", "pinned", "loaded_at", "last_used", "in_flight",
                      "queued", "served", "tokens_generated", "ttl_remaining", "last_error"):
            assert field in models["a"]
        # The design documents' status shape, beside ours.
        assert sorted(m["model_id"] for m in status["loaded_models"]) == ["a", "c"] and status["total_models"] == 2
        for m in status["loaded_models"]:
            assert m["model_type"] == "text-gen" and m["size_gb"] > 0 and m["loaded_at"] and m["last_used"]
            assert m["preloaded"] is (m["model_id"] == "a")
        assert status["memory"]["active_gb"] > 0 and status["memory"]["cache_gb"] >= 0
        assert status["max_memory_gb"] == round(status["pool"]["budget"] / 1e9, 3) and status["max_models"] == 2
        r = admin(server, "unload", "a")
        assert r.status_code == 200 and r.json()["action"] == "drained"
        assert r.json()["status"] == "unloaded" and r.json()["model_id"] == "a"
        assert r.json()["memory_released"] > 10 * MiB
        assert by_id(admin(server, "status").json())["a"]["state"] == "stopped"
        r = admin(server, "unload", "a")
        assert r.status_code == 404 and r.json()["error"]["message"] == "Model not loaded: a"
        assert admin(server, "load", "nope").json()["error"]["code"] == "model_not_found"
        health = httpx.get(f"{server.base_url}/admin/health", timeout=10).json()
        assert health["status"] == "healthy" and health["supervisor"] == "ok" and health["workers"]["c"] == "ready"
    finally:
        server.stop()


def test_cli_status_load_unload(tmp_path: Path, three_models: dict[str, Path]) -> None:
    server = FleetServer(write_config(tmp_path / "fleet.toml", {"a": three_models["a"]}),
                         tmp_path / "state").wait_ready()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mlx_fleet.cli", *args, "--url", server.base_url],
                              capture_output=True, text=True, timeout=120)
    try:
        out = cli("load", "a")
        assert out.returncode == 0 and "a: ready" in out.stdout and "pinned" in out.stdout
        out = cli("status")
        assert out.returncode == 0
        header, row = out.stdout.splitlines()[:2]
        assert header.split()[:5] == ["MODEL", "TYPE", "TIER", "SOURCE", "STATE"]
        assert row.split()[:5] == ["a", "text", "fast", "config", "ready"]
        assert "policy lru" in out.stdout
        out = cli("unload", "a")
        assert out.returncode == 0 and "a: drained, released" in out.stdout
        out = cli("unload", "a")
        assert out.returncode == 1 and "not loaded" in out.stderr
    finally:
        server.stop()


def tree_rss(server: FleetServer) -> int:
    total = 0
    for p in server.tree():
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_memory_really_returns_to_the_os(tmp_path: Path) -> None:
    """A ~1 GB model: the machine's available memory drops while it is loaded and comes back.

    The machine's free memory also moves for reasons of its own (by up to 300 MB here,
    with no process of ours holding anything), so the load/unload cycle is repeated up to four
    times and one clean cycle is enough; memory that did not come back would fail all four.
    """
    model = build_tiny_lm(tmp_path / "big", hidden_size=1536, num_layers=8, intermediate_size=6144,
                          num_heads=12, num_kv_heads=4)
    size = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    assert size > 900 * MiB
    os.sync()  # the model was just written: settle the page cache before measuring around it
    # No warm spare: a replacement spare starting after the unload would blur the measurement.
    config = write_config(tmp_path / "fleet.toml", {"big": model}, "[memory]\nspares = 0\n")
    server = FleetServer(config, tmp_path / "state").wait_ready()
    cycles = []
    try:
        tree_before = tree_rss(server)
        for _ in range(4):
            before = psutil.virtual_memory().available
            r = admin(server, "load", "big")
            assert r.status_code == 200
            pid = r.json()["pid"]
            loaded = psutil.virtual_memory().available
            r = admin(server, "unload", "big")
            assert r.status_code == 200 and r.json()["memory_released"] > size
            assert not psutil.pid_exists(pid)
            unloaded_at = time.monotonic()
            while True:
                after = psutil.virtual_memory().available
                if before - after < 0.2 * size or time.monotonic() - unloaded_at > 3:
                    break
                time.sleep(0.05)
            cycles.append((before - loaded, before - after))
            if before - loaded > 0.25 * size and before - after < 0.2 * size:
                break
        else:
            pytest.fail(f"no cycle returned the memory: (drop while loaded, left after unload) = {cycles}")
        # and, exactly, from our own processes: the server's tree is back to its size before
        assert tree_rss(server) - tree_before < 0.1 * size, (tree_before, tree_rss(server), size)
    finally:
        server.stop()


def ready_spares(server: FleetServer, n: int) -> list[dict]:
    deadline = time.monotonic() + 60
    while len(spares := [s for s in admin(server, "status").json()["pool"]["spares"] if s["state"] == "ready"]) < n:
        assert time.monotonic() < deadline, f"no {n} ready warm spares came up"
        time.sleep(0.05)
    return spares


def test_warm_spares_become_the_next_models_workers(tmp_path: Path, three_models: dict[str, Path]) -> None:
    config = write_config(tmp_path / "fleet.toml", three_models, "[memory]\nspares = 2\n")
    server = FleetServer(config, tmp_path / "state").wait_ready()
    try:
        spares = ready_spares(server, 2)
        spare = admin(server, "status").json()["pool"]["spare"]
        assert spare == spares[0]
        started = time.monotonic()
        ask(server, "a")
        cold = time.monotonic() - started
        status = admin(server, "status").json()
        model_a = by_id(status)["a"]
        assert model_a["pid"] == spare["pid"]  # the spare was turned into a's worker
        assert cold < model_a["load_seconds"] + 1.0, (cold, model_a["load_seconds"])
        ask(server, "b")  # the second spare, straight away: the pool is refilled in the background
        assert by_id(admin(server, "status").json())["b"]["pid"] == spares[1]["pid"]
        replacements = ready_spares(server, 2)
        assert not {s["pid"] for s in replacements} & {s["pid"] for s in spares}
        tree = server.tree()
    finally:
        server.stop()
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in tree)
