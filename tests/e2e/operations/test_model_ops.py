"""Per-model logs, diagnosis of a failed load, dry runs and the fleet's metrics, through the real stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleet_server import ROOT, FleetServer, strict_client

BUDGET = 1536 * 2**20
BIG = BUDGET - 176 * 2**20  # + a worker (128 MiB): fits alone with 48 MiB to spare, not beside tiny (~90 MB)


def sparse_copy(source: Path, target: Path, extra_weights: int) -> Path:
    """A copy of a model with a weight file of `extra_weights` bytes that takes no disk (a hole)."""
    shutil.copytree(source, target)
    with open(target / "extra.safetensors", "wb") as f:
        f.truncate(extra_weights)
    return target


@pytest.fixture(scope="module")
def fleet_ops(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path) -> Iterator[FleetServer]:
    root = tmp_path_factory.mktemp("model-ops")
    broken = sparse_copy(tiny_lm, root / "broken", 0)
    config_json = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config_json, "model_type": "no_such_architecture"}))
    models = {"tiny": tiny_lm, "big": sparse_copy(tiny_lm, root / "big", BIG),
              "huge": sparse_copy(tiny_lm, root / "huge", 2 * BUDGET), "broken": broken,
              "remote": "no-such-org/no-such-model"}
    config = root / "fleet.toml"
    config.write_text(f'[memory]\nbudget = "{BUDGET}B"\nspares = 0\n'
                      + "".join(f'[[models]]\nid = "{i}"\npath = "{p}"\ntype = "text"\n' for i, p in models.items()))
    server = FleetServer(config, root / "state").wait_ready()
    server.state_dir = root / "state"
    yield server
    server.stop()


def dry_run(server: FleetServer, model: str) -> dict:
    r = httpx.post(f"{server.base_url}/admin/models/{model}/dry-run", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def titles(result: dict) -> dict[str, str]:
    return {w["title"]: w["severity"] for w in result["warnings"]}


def test_a_failed_load_shows_its_reason_and_traceback(fleet_ops: FleetServer) -> None:
    with pytest.raises(openai.APIStatusError) as failed:
        strict_client(fleet_ops.base_url).completions.create(model="broken", prompt="hi", max_tokens=2)
    assert failed.value.status_code == 503
    r = httpx.get(f"{fleet_ops.base_url}/admin/models/broken/logs", params={"tail": 200, "diagnose": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    diagnosis = body["diagnosis"]
    failure = diagnosis["last_failed_load"]
    assert "no_such_architecture" in failure["reason"]
    assert failure["traceback"].startswith("Traceback") and "no_such_architecture" in failure["traceback"]
    assert diagnosis["detected_type"] == "text" and diagnosis["estimate_bytes"] > 0
    assert diagnosis["config"]["id"] == "broken" and diagnosis["config"]["path"].endswith("broken")
    assert any("Traceback" in line for line in body["lines"])  # the worker's own output, in its log file
    plain = httpx.get(f"{fleet_ops.base_url}/admin/models/broken/logs").json()
    assert plain["diagnosis"] is None and plain["lines"]


def test_dry_run_names_what_it_would_evict_and_warns_past_the_budget(fleet_ops: FleetServer) -> None:
    assert strict_client(fleet_ops.base_url).completions.create(model="tiny", prompt="hi", max_tokens=2)
    big = dry_run(fleet_ops, "big")
    assert big["estimate_bytes"] > BIG and big["vram_estimate_gb"] == round(big["estimate_bytes"] / 2**30, 3)
    assert (big["fits"], big["fits_now"], big["would_evict"]) == (True, False, ["tiny"]), json.dumps(big)
    assert titles(big)["Would evict"] == "warning"
    huge = dry_run(fleet_ops, "huge")
    assert (huge["fits"], huge["would_evict"]) == (False, [])
    assert titles(huge)["Larger than the budget"] == "error"
    loaded = dry_run(fleet_ops, "tiny")
    assert loaded["fits_now"] and "Already loaded" in titles(loaded)
    assert titles(dry_run(fleet_ops, "remote"))["Not cached, downloads off"] == "error"
    assert titles(dry_run(fleet_ops, "broken"))["Unknown architecture"] == "warning"
    status = httpx.get(f"{fleet_ops.base_url}/admin/models/status").json()
    assert {m["id"]: m["state"] for m in status["models"]}["big"] == "stopped"  # nothing was loaded
    assert httpx.post(f"{fleet_ops.base_url}/admin/models/nope/dry-run").status_code == 404


def test_fleet_metrics_count_loads_and_failures(fleet_ops: FleetServer) -> None:
    strict_client(fleet_ops.base_url).completions.create(model="tiny", prompt="hi", max_tokens=2)
    with pytest.raises(openai.APIStatusError):
        strict_client(fleet_ops.base_url).completions.create(model="broken", prompt="hi", max_tokens=2)
    text = httpx.get(f"{fleet_ops.base_url}/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("mlx_fleet_loads_total", (("model", "tiny"),))] >= 1
    assert samples[("mlx_fleet_load_duration_seconds_count", (("model", "tiny"),))] >= 1
    assert samples[("mlx_fleet_load_duration_seconds_sum", (("model", "tiny"),))] > 0
    assert samples[("mlx_fleet_load_failures_total", (("model", "broken"),))] >= 1
    assert ("mlx_fleet_evictions_total", (("model", "tiny"),)) in samples
    assert ("mlx_fleet_crashes_total", (("model", "tiny"),)) in samples


def test_the_logs_command(fleet_ops: FleetServer) -> None:
    strict_client(fleet_ops.base_url).completions.create(model="tiny", prompt="hi", max_tokens=2)
    shown = subprocess.run([sys.executable, "-m", "mlx_fleet.cli", "logs", "broken", "--diagnose", "--url",
                            fleet_ops.base_url], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MLX_FLEET_SERVER_ADMIN_KEY": ""})
    assert shown.returncode == 0, shown.stderr
    assert "last failed load" in shown.stdout and "no_such_architecture" in shown.stdout
