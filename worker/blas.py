"""Make MLX's Linux CPU build use OpenBLAS instead of the reference BLAS.

The Linux ``mlx[cpu]`` wheel links against netlib's reference BLAS, whose fp32
matmul runs at roughly 3 GFLOPS; Debian's OpenBLAS (package
``libopenblas0-pthread``) gives about 20x that. Loading OpenBLAS into the
process with ``RTLD_GLOBAL`` *before* ``libmlx.so`` is loaded makes the dynamic
linker resolve MLX's ``sgemm_``/``cblas_*`` symbols to OpenBLAS. Loading it
after ``import mlx.core`` has no effect, because MLX's symbols are already bound.

OpenBLAS's threads spin for about 2^28 cycles (~0.1 s) after each call before they sleep. A
worker shares the machine with the router, the other workers and the clients, and that spinning
took their cores: a decoding tiny model kept 1.75 cores busy instead of 1.5, and every worker
burned half a core for 0.1 s after each request. Spinning 2^16 cycles (~25 us, long enough to
span the gaps between the calls of one forward pass) measured no slower for one stream, in
isolation, on the tiny model or SmolLM2. `OPENBLAS_THREAD_TIMEOUT` set in the environment wins.

This module deliberately imports nothing from MLX.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

__all__ = ["preload_blas"]

# Where Debian/Ubuntu's libopenblas0-pthread puts the library; tried when
# ctypes.util.find_library cannot see it (e.g. ldconfig cache not refreshed).
_KNOWN_PATHS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
)

THREAD_TIMEOUT = "16"  # log2 of the cycles OpenBLAS's threads spin before they sleep

# The CDLL handle is kept alive for the life of the process: dropping the last
# reference does not unload a library in CPython, but holding it makes the
# intent explicit and lets repeated calls return immediately.
_loaded: tuple[str, ctypes.CDLL] | None = None


def _candidates() -> list[str]:
    """Library names/paths to try, most specific first, without duplicates."""
    found: list[str] = []
    name = ctypes.util.find_library("openblas")
    if name:
        found.append(name)
    found.append("libopenblas.so.0")
    found.extend(p for p in _KNOWN_PATHS if Path(p).exists())
    return list(dict.fromkeys(found))


def preload_blas() -> str | None:
    """Load OpenBLAS globally so that MLX's CPU kernels use it; return what was loaded.

    Must be called before the first ``import mlx.core`` in the process to have
    any effect. It is purely a speed optimisation: on any platform other than
    Linux (macOS uses Accelerate), or when OpenBLAS is not installed, it does
    nothing and returns ``None``. Calling it more than once is harmless.
    """
    global _loaded
    if not sys.platform.startswith("linux"):
        return None
    if _loaded is not None:
        return _loaded[0]
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)  # read when the library loads
    for candidate in _candidates():
        try:
            handle = ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        _loaded = (candidate, handle)
        return candidate
    return None
