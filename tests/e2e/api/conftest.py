"""A real `mlx-fleet serve` process tree with two tiny models, for the API tests to talk to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from fleet_server import FleetServer, strict_client, write_config
from tiny_models import build_tiny_lm


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2", seed=1)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, tiny_lm: Path, tiny_qwen: Path) -> Iterator[FleetServer]:
    """One server with two tiny models, shared by a module's tests."""
    root = tmp_path_factory.mktemp("fleet")
    config = write_config(root / "fleet.toml", {"tiny": tiny_lm, "tiny-qwen": tiny_qwen})
    server = FleetServer(config, root / "state").wait_ready()
    yield server
    server.stop()


@pytest.fixture
def client(fleet: FleetServer) -> openai.OpenAI:
    return strict_client(fleet.base_url)
