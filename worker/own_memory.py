"""A worker's own memory reading: what MLX holds, and what the OS charges the process."""

from __future__ import annotations

import mlx.core as mx
import psutil

from mlx_fleet.protocol import Memory

_process = psutil.Process()


def measure() -> Memory:
    return Memory(
        rss=_process.memory_info().rss,
        mlx_active=mx.get_active_memory(),
        mlx_cache=mx.get_cache_memory(),
        mlx_peak=mx.get_peak_memory(),
    )
