"""`python -m mlx_fleet.worker.capabilities`: this machine's MLX facts as one JSON object on stdout.

A short-lived process, so that the router can report MLX's versions and device without ever
importing MLX itself (the router and supervisor stay small and start in milliseconds).
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
import sys

PACKAGES = ("mlx", "mlx-lm", "mlx-vlm", "mlx-embeddings")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _chip() -> str:
    if sys.platform == "darwin":
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


def capabilities() -> dict:
    import mlx.core as mx

    device = mx.default_device()
    info = mx.device_info() if hasattr(mx, "device_info") else {}
    return {
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "chip": _chip(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
        "mlx_device": {"type": str(device.type).rsplit(".", 1)[-1], "metal": bool(mx.metal.is_available()),
                       "info": {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in info.items()}},
    }


if __name__ == "__main__":
    json.dump(capabilities(), sys.stdout)
