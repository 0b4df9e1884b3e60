"""Memory figures for the policy: the budget, estimates before a load, measurements after.

Estimates come from the weight files on disk plus the cost of a worker process with MLX and
mlx-lm imported; once a model has been measured, its measured footprint is remembered (in the
state directory) and becomes its next estimate. Measurements take the larger of the process
tree's RSS (psutil, from outside) and what MLX says it holds (the worker's own report): on Linux
MLX's buffers are in the RSS, on macOS Metal buffers may not be.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import psutil

from mlx_fleet.config import ModelConfig
from mlx_fleet.model_types import hf_cache_snapshot
from mlx_fleet.protocol import Memory
from mlx_fleet.units import MemoryBudget

log = logging.getLogger("mlx_fleet.supervisor")

# A worker with mlx-lm imported and nothing loaded (measured: ~100 MB on Linux).
RUNTIME_OVERHEAD = 128 * 2**20
# A GGUF's 4/8-bit weights grow this much when converted to fp32 (the Linux fast path).
GGUF_FP32_GROWTH = 5.5
_WEIGHT_SUFFIXES = (".safetensors", ".npz", ".gguf")


def budget_bytes(budget: MemoryBudget, total: int | None = None) -> int:
    """The configured budget, capped on macOS by what Metal recommends for the GPU's working set."""
    total = psutil.virtual_memory().total if total is None else total
    value = budget.of(total)
    working_set = metal_working_set()
    return min(value, working_set) if working_set else value


def metal_working_set() -> int | None:
    """`mx.device_info()["max_recommended_working_set_size"]`, read in a short-lived process so
    the supervisor itself never imports MLX (macOS only)."""
    if sys.platform != "darwin":
        return None
    code = "import mlx.core as mx; print(mx.device_info().get('max_recommended_working_set_size', 0))"
    with contextlib.suppress(Exception):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        return int(out.stdout.strip()) or None
    return None


def weight_bytes(path: str) -> int:
    """Bytes of weights on disk for a local directory, a GGUF file or a cached hub repo."""
    p = Path(path)
    if p.is_file():
        size = p.stat().st_size
        return int(size * GGUF_FP32_GROWTH) if p.suffix == ".gguf" and sys.platform != "darwin" else size
    directory = p if p.is_dir() else hf_cache_snapshot(path)
    if directory is None:
        return 0
    return sum(f.stat().st_size for f in directory.rglob("*") if f.suffix in _WEIGHT_SUFFIXES and f.is_file())


def tree_rss(pid: int) -> int:
    """RSS of a process and its descendants. Finding the descendants walks the whole process
    table (about 1 ms here), so it runs on the housekeeping tick, not on every worker report."""
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (proc, *proc.children(recursive=True)))
    return 0


def footprint(tree: int, report: Memory | None) -> int:
    """What a worker costs: the largest of its tree's RSS, its own RSS and what MLX holds."""
    if report is None:
        return tree
    return max(tree, report.rss, report.mlx_active + report.mlx_cache)


class Remembered:
    """Measured footprints by model, kept across restarts so the next estimate is exact."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sizes: dict[str, int] = {}
        if path is not None and path.exists():
            with contextlib.suppress(ValueError, OSError):
                self.sizes = {k: int(v) for k, v in json.loads(path.read_text()).items()}

    @staticmethod
    def key(model: ModelConfig) -> str:
        return f"{model.id}:{model.path}"

    def estimate(self, model: ModelConfig) -> tuple[int, bool]:
        """(bytes, whether that figure was measured before)."""
        known = self.sizes.get(self.key(model))
        if known:
            return known, True
        return weight_bytes(model.path) + RUNTIME_OVERHEAD, False

    def remember(self, model: ModelConfig, measured: int) -> None:
        self.sizes[self.key(model)] = measured
        if self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.sizes, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
