"""The layers hold: import-linter's contracts in pyproject.toml, checked on the source as installed.

The folders `router/`, `supervisor/` and `worker/` sit at the top of the repository and install as
`mlx_fleet.router`, `mlx_fleet.supervisor` and `mlx_fleet.worker` (setup.py). import-linter (through
grimp) reads a package from its folder, so it would not see them inside `mlx_fleet/`: the test
stages the installed shape first, a folder of links, and runs `lint-imports` on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROCESSES = ("router", "supervisor", "worker")


def staged_package(into: Path) -> Path:
    """`mlx_fleet/` as a wheel lays it out: its own entries, and the three process folders."""
    package = into / "mlx_fleet"
    package.mkdir()
    for entry in (ROOT / "mlx_fleet").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in PROCESSES:
        (package / name).symlink_to(ROOT / name)
    return package


def test_import_linter_contracts_hold(tmp_path: Path) -> None:
    staged_package(tmp_path)
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout and "3 kept" in done.stdout, done.stdout


def test_every_shared_module_is_in_a_layer(tmp_path: Path) -> None:
    """A module added to `mlx_fleet/` must be placed in the layers, or the contract would not
    constrain it (import-linter leaves unnamed modules free)."""
    package = staged_package(tmp_path)
    children = {p.stem for p in package.iterdir() if p.name != "__init__.py" and (p.suffix == ".py" or p.is_dir())}
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {part.strip().removeprefix("mlx_fleet.") for layer in layers for part in layer.replace("|", ":").split(":")}
    assert children == named


def test_the_project_claims_only_the_mlx_fleet_import_name(tmp_path: Path) -> None:
    """From any folder but the repository's, `router`, `supervisor` and `worker` are not ours (PyPI's
    supervisor can be installed beside mlx-fleet), while `mlx_fleet.*` resolves to these folders."""
    probe = ("import importlib.util, json; "
             "print(json.dumps({n: getattr(importlib.util.find_spec(n), 'origin', None) "
             "for n in ('router', 'supervisor', 'worker', 'mlx_fleet.router', 'mlx_fleet.supervisor', "
             "'mlx_fleet.worker')}))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    for name in PROCESSES:
        assert found[name] is None or not Path(found[name]).is_relative_to(ROOT), found
        assert Path(found[f"mlx_fleet.{name}"]) == ROOT / name / "__init__.py", found
