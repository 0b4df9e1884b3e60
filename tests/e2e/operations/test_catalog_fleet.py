"""The catalog through the real stack: discovered models served by id, the registry API, tiers,
profiles, overrides across a restart, and `wait_for_profile`.

The models are the tiny fixtures laid out as a user has them: a scan folder (one model nested a
level down, one embedding model) and a Hugging Face cache (`models--org--tiny-chat/snapshots/
<rev>/`, `refs/main`) that the server reads through `HF_HUB_CACHE`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from fleet_server import FleetServer, admin, by_id, strict_client
from mlx_fleet.catalog.inspect import describe_dir
from tiny_models import build_tiny_bert, build_tiny_lm


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catalog")
    shelf = root / "shelf"
    shutil.copytree(tiny_lm, shelf / "tiny-a")
    build_tiny_lm(shelf / "bigger" / "tiny-b", hidden_size=128, num_heads=4, seed=3)
    build_tiny_bert(shelf / "bert-small")
    hub = root / "hub"
    snapshot = hub / "models--org--tiny-chat" / "snapshots" / "abc123"
    shutil.copytree(tiny_lm, snapshot)
    (hub / "models--org--tiny-chat" / "refs").mkdir()
    (hub / "models--org--tiny-chat" / "refs" / "main").write_text("abc123")
    return {"root": root, "shelf": shelf, "hub": hub, "tiny": tiny_lm}


def write_catalog_config(layout: dict[str, Path], extra: str = "") -> Path:
    """tiny-a and org/tiny-chat (the same size) are `fast`, tiny-b is `balanced`."""
    small = describe_dir(layout["shelf"] / "tiny-a", "tiny-a").parameters
    bigger = describe_dir(layout["shelf"] / "bigger" / "tiny-b", "tiny-b").parameters
    assert small and bigger and small < bigger
    path = layout["root"] / f"fleet-{time.monotonic_ns()}.toml"
    path.write_text(
        f'[catalog]\nscan = ["{layout["shelf"]}"]\nhf_cache = true\ntier_thresholds = ["{small + 1}", "{bigger + 1}"]\n'
        f'{extra}\n[profiles.day]\nmodels = ["tiny-a"]\n\n'
        f'[[models]]\nid = "configured"\npath = "{layout["tiny"]}"\naliases = ["conf"]\n')
    return path


def start(layout: dict[str, Path], state: Path, extra: str = "", wait: bool = True) -> FleetServer:
    server = FleetServer(write_catalog_config(layout, extra), state, env={"HF_HUB_CACHE": str(layout["hub"])})
    return server.wait_ready() if wait else server


@pytest.fixture(scope="module")
def server(layout: dict[str, Path]) -> Iterator[FleetServer]:
    fleet = start(layout, layout["root"] / "state")
    yield fleet
    fleet.stop()


def chat(server: FleetServer, model: str) -> openai.types.chat.ChatCompletion:
    return strict_client(server.base_url).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=3, temperature=0)


def api(server: FleetServer, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.base_url}{path}", timeout=120, **kwargs)


def registry(server: FleetServer) -> dict[str, dict]:
    return {m["id"]: m for m in api(server, "GET", "/admin/models/registry").json()["models"]}


def worker_pids(server: FleetServer) -> set[int]:
    """Workers and warm spares."""
    return {p.pid for p in server.tree() if p.cmdline()[1:3] == ["-m", "mlx_fleet.worker"]}


def test_registry_lists_every_model_with_its_facts(server: FleetServer, layout: dict[str, Path]) -> None:
    body = api(server, "GET", "/admin/models/registry").json()
    models = {m["id"]: m for m in body["models"]}
    assert set(models) == {"configured", "tiny-a", "tiny-b", "bert-small", "org/tiny-chat"}
    assert {k: (m["source"], m["type"]) for k, m in models.items()} == {
        "configured": ("config", "text"), "tiny-a": ("scan", "text"), "tiny-b": ("scan", "text"),
        "bert-small": ("scan", "embeddings"), "org/tiny-chat": ("hf_cache", "text")}
    assert [models[m]["tier"] for m in ("configured", "tiny-a", "org/tiny-chat", "tiny-b")] == [
        "fast", "fast", "fast", "balanced"]
    weights = sum(f.stat().st_size for f in (layout["shelf"] / "bigger" / "tiny-b").glob("*.safetensors"))
    assert models["tiny-b"]["size_bytes"] == weights
    assert models["org/tiny-chat"]["path"].endswith("snapshots/abc123")
    assert body["scan_paths"] == [str(layout["shelf"])] and body["last_scan"] > 0
    listed = {m.id for m in strict_client(server.base_url).models.list().data}
    assert listed == set(models)


def test_a_hub_repo_id_is_served_and_loaded_by_its_id(server: FleetServer) -> None:
    answer = chat(server, "org/tiny-chat")
    assert answer.model == "org/tiny-chat" and answer.usage.completion_tokens == 3
    r = api(server, "POST", "/admin/models/unload/org/tiny-chat")
    assert r.status_code == 200 and r.json()["model"] == "org/tiny-chat"
    r = api(server, "POST", "/admin/models/load/org/tiny-chat")
    assert r.status_code == 200 and r.json()["state"] == "ready" and r.json()["pinned"]
    status = by_id(admin(server, "status").json())["org/tiny-chat"]
    assert (status["tier"], status["source"]) == ("fast", "hf_cache")
    assert api(server, "POST", "/admin/models/unload/org/tiny-chat").status_code == 200


def test_a_tier_request_takes_the_loaded_model_of_that_tier(server: FleetServer) -> None:
    assert api(server, "POST", "/admin/models/load/tiny-a").status_code == 200
    api(server, "POST", "/admin/models/unload/org/tiny-chat")
    tiny_a = by_id(admin(server, "status").json())["tiny-a"]["pid"]
    before = worker_pids(server)
    # "configured" and org/tiny-chat are as small and sort first: only a loaded-first choice picks tiny-a.
    answer = chat(server, "tier:fast")
    assert answer.model == "tiny-a"
    assert by_id(admin(server, "status").json())["tiny-a"]["pid"] == tiny_a
    assert worker_pids(server) <= before  # no new worker was started for it
    balanced = api(server, "GET", "/admin/models/tiers/balanced").json()["models"]
    assert {m["id"] for m in balanced} == {"tiny-b", "bert-small"}
    assert [m["parameters"] for m in balanced] == sorted(m["parameters"] for m in balanced)
    r = httpx.post(f"{server.base_url}/v1/chat/completions", timeout=30, json={
        "model": "tier:huge", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "tier_not_found"
    api(server, "POST", "/admin/models/unload/tiny-a")


def test_rescan_adds_and_removes_models(server: FleetServer, layout: dict[str, Path]) -> None:
    shutil.copytree(layout["tiny"], layout["shelf"] / "tiny-new")
    r = api(server, "POST", "/admin/models/rescan").json()
    assert r["added"] == ["tiny-new"] and r["removed"] == [] and r["models_found"] == 5
    assert (r["models_added"], r["models_removed"]) == (len(r["added"]), len(r["removed"])) == (1, 0)
    assert chat(server, "tiny-new").model == "tiny-new"
    pid = by_id(admin(server, "status").json())["tiny-new"]["pid"]
    shutil.rmtree(layout["shelf"] / "tiny-new")
    r = api(server, "POST", "/admin/models/rescan").json()
    assert r["removed"] == ["tiny-new"] and r["added"] == []
    assert (r["models_added"], r["models_removed"]) == (len(r["added"]), len(r["removed"])) == (0, 1)
    assert "tiny-new" not in registry(server)
    deadline = time.monotonic() + 30
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    with pytest.raises(openai.NotFoundError):
        chat(server, "tiny-new")


def test_profiles_pin_and_unpin_and_the_active_one_stays(server: FleetServer) -> None:
    r = api(server, "POST", "/admin/profiles", json={"name": "night", "models": ["tiny-b", "org/tiny-chat"]})
    assert r.status_code == 201 and r.json()["source"] == "api"
    assert api(server, "POST", "/admin/profiles", json={"name": "x", "models": ["nope"]}).status_code == 404
    r = api(server, "POST", "/admin/profiles/day/activate")
    assert r.status_code == 200 and r.json()["pinned"] == ["tiny-a"]
    r = api(server, "POST", "/admin/profiles/night/activate")
    assert r.json()["pinned"] == ["tiny-b", "org/tiny-chat"] and r.json()["unpinned"] == ["tiny-a"]
    models = by_id(admin(server, "status").json())
    assert models["tiny-b"]["pinned"] and models["org/tiny-chat"]["pinned"] and not models["tiny-a"]["pinned"]
    assert models["tiny-b"]["state"] == "ready"
    r = api(server, "DELETE", "/admin/profiles/night")
    assert r.status_code == 409 and r.json()["error"]["code"] == "profile_active"
    listing = api(server, "GET", "/admin/profiles").json()
    assert listing["active"] == "night" and {p["name"] for p in listing["profiles"]} == {"day", "night"}
    assert api(server, "GET", "/admin/profiles/night").json()["models"] == ["tiny-b", "org/tiny-chat"]
    api(server, "POST", "/admin/profiles/day/activate")
    assert api(server, "DELETE", "/admin/profiles/night").status_code == 200
    assert api(server, "GET", "/admin/profiles/night").status_code == 404


def test_a_disabled_model_is_404_and_stays_disabled_after_a_restart(layout: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start(layout, state)
    try:
        assert chat(server, "tiny-b").model == "tiny-b"
        r = api(server, "PUT", "/admin/models/tiny-b/enabled", json={"enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False
        assert by_id(admin(server, "status").json())["tiny-b"]["state"] == "stopped"
        r = api(server, "PUT", "/admin/models/org/tiny-chat/tier", json={"tier": "powerful"})
        assert r.status_code == 200 and r.json()["tier"] == "powerful"
        with pytest.raises(openai.NotFoundError):
            chat(server, "tiny-b")
        assert "tiny-b" not in {m.id for m in strict_client(server.base_url).models.list().data}
    finally:
        server.stop()
    server = start(layout, state)
    try:
        models = registry(server)
        assert models["tiny-b"]["enabled"] is False and models["org/tiny-chat"]["tier"] == "powerful"
        with pytest.raises(openai.NotFoundError):
            chat(server, "tiny-b")
        assert api(server, "PUT", "/admin/models/tiny-b/enabled", json={"enabled": True}).status_code == 200
        assert chat(server, "tiny-b").model == "tiny-b"
    finally:
        server.stop()


def test_the_active_profile_survives_a_restart_until_the_config_names_another(
        layout: dict[str, Path], tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = start(layout, state)
    try:
        assert api(server, "POST", "/admin/profiles", json={"name": "night", "models": ["tiny-b"]}).status_code == 201
        assert api(server, "POST", "/admin/profiles/night/activate").status_code == 200
    finally:
        server.stop()
    server = start(layout, state)  # the same config: the API's choice is restored
    try:
        assert wait_pinned(server, "tiny-b")
        assert api(server, "GET", "/admin/profiles").json()["active"] == "night"
    finally:
        server.stop()
    server = start(layout, state, 'profile = "day"')  # the config's profile changed since: it wins
    try:
        assert wait_pinned(server, "tiny-a")
        assert not by_id(admin(server, "status").json()).get("tiny-b", {}).get("pinned")
        assert api(server, "GET", "/admin/profiles").json()["active"] == "day"
    finally:
        server.stop()


def wait_pinned(server: FleetServer, model: str) -> bool:
    """The startup profile activates after /health turns 200 (without `wait_for_profile`)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = by_id(admin(server, "status").json()).get(model)
        if status is not None and status["pinned"] and status["state"] == "ready":
            return True
        time.sleep(0.05)
    return False


def test_wait_for_profile_holds_health_until_its_models_are_ready(layout: dict[str, Path], tmp_path: Path) -> None:
    """With policy "preload" too: the active profile is the fleet."""
    extra = ('profile = "both"\nwait_for_profile = true\n[memory]\npolicy = "preload"\n'
             '[profiles.both]\nmodels = ["tiny-a", "tiny-b"]\n')
    server = start(layout, tmp_path / "state", extra, wait=False)
    try:
        codes = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{server.base_url}/health", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            codes.append(r.json().get("error", {}).get("code") if r.status_code != 200 else 200)
            if r.status_code == 200:
                break
            time.sleep(0.05)
        assert codes[-1] == 200 and "profile_loading" in codes
        models = by_id(admin(server, "status").json())
        assert all(models[m]["state"] == "ready" and models[m]["pinned"] for m in ("tiny-a", "tiny-b"))
        assert chat(server, "tiny-b").model == "tiny-b"
        with pytest.raises(openai.InternalServerError) as refused:
            chat(server, "org/tiny-chat")  # not in the profile: not served under "preload"
        assert refused.value.status_code == 503 and refused.value.body["code"] == "model_not_loaded"
    finally:
        server.stop()


def cli(server: FleetServer, *argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", "mlx_fleet.cli", *argv, "--url", server.base_url],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_commands(server: FleetServer) -> None:
    listing = cli(server, "models")
    assert "org/tiny-chat" in listing and "hf_cache" in listing and "balanced" in listing
    assert "tiny-a: disabled" in cli(server, "models", "disable", "tiny-a")
    assert registry(server)["tiny-a"]["enabled"] is False
    assert "tiny-a: enabled" in cli(server, "models", "enable", "tiny-a")
    assert "org/tiny-chat: tier balanced" in cli(server, "models", "tier", "org/tiny-chat", "balanced")
    assert registry(server)["org/tiny-chat"]["tier"] == "balanced"
    assert "4 models found on disk" in cli(server, "models", "scan")
    assert "profile day active: tiny-a" in cli(server, "profile", "use", "day")
    assert "* day (config): tiny-a" in cli(server, "profile", "list")
    status = cli(server, "status").splitlines()
    assert status[0].split()[:4] == ["MODEL", "TYPE", "TIER", "SOURCE"]
    assert any(line.split()[:4] == ["tiny-a", "text", "fast", "scan"] for line in status)
