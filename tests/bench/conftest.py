"""Fixtures for the benchmarks: one warm in-process helper, the benchmark models, scratch space.

Every benchmark is marked `bench` (deselected by default; `./run bench` runs them with `-s` so
the tables show). The fixtures here use only `benchlib`, never the suite's root conftest, so
that on a machine without the test extras (no `openai`) the suite still runs with
`pytest tests/bench -m bench -s --confcutdir=tests/bench`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchlib import InProc, ModelStore


@pytest.fixture(scope="session")
def bench_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Scratch space for configs and server logs (pytest keeps the last few runs' for reading)."""
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="session")
def state_dir(bench_dir: Path) -> Path:
    """The fleet's state directory for every server the session starts (converted models live here)."""
    path = bench_dir / "state"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def inproc(bench_dir: Path) -> Iterator[InProc]:
    helper = InProc(bench_dir / "inproc.log")
    yield helper
    helper.close()


@pytest.fixture(scope="session")
def info(inproc: InProc) -> dict:
    """What the in-process side runs on: device, MLX and mlx-lm versions, the BLAS it loaded."""
    return inproc.info


@pytest.fixture(scope="session")
def models(state_dir: Path, inproc: InProc) -> ModelStore:
    return ModelStore(state_dir, inproc)
