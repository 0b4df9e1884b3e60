"""The fixture unit and end-to-end tests share: a tiny real model, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiny_models import build_tiny_lm


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("models") / "tiny-llama", arch="llama")
