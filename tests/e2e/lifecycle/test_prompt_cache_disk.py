"""The prompt cache's disk tier through the real stack: a model evicted by another finds its
long prefix on disk at its next request, and answers as it would with the tier off."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_server import FleetServer, strict_client, write_config
from tiny_models import build_tiny_lm

LONG = " ".join(f"note {i}: the river meets the mountain by the lake;" for i in range(40))


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("two")
    return {name: build_tiny_lm(root / name, seed=i) for i, name in enumerate(("a", "b"))}


def session(tmp_path: Path, models: dict[str, Path], disk: str) -> tuple[int, int, str]:
    """a's first turn, then b (which evicts a: one model at a time), then a's next turn: that
    turn's prompt tokens, cached tokens and answer."""
    config = write_config(tmp_path / f"fleet-{disk}.toml", models,
                          f'[memory]\nmax_models = 1\n[prompt_cache]\ndisk = "{disk}"\n')
    server = FleetServer(config, tmp_path / f"state-{disk}").wait_ready()
    client = strict_client(server.base_url)
    try:
        turn = [{"role": "user", "content": LONG}]
        first = client.chat.completions.create(model="a", messages=turn, max_tokens=8, temperature=0)
        client.chat.completions.create(model="b", messages=[{"role": "user", "content": "hello"}], max_tokens=3,
                                       temperature=0)
        turn += [{"role": "assistant", "content": first.choices[0].message.content},
                 {"role": "user", "content": "Where does the river meet the mountain?"}]
        second = client.chat.completions.create(model="a", messages=turn, max_tokens=12, temperature=0)
    finally:
        server.stop()
    usage = second.usage
    return usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens, second.choices[0].message.content


def test_an_evicted_model_restores_its_prefix_from_disk(tmp_path: Path, two_models: dict[str, Path]) -> None:
    prompt, cached, answer = session(tmp_path, two_models, "1GiB")
    assert 512 <= cached < prompt and cached % 256 == 0
    assert list((tmp_path / "state-1GiB" / "prompt-cache").glob("*/*/*"))  # the blocks, where the README says
    prompt_off, cached_off, answer_off = session(tmp_path, two_models, "0")
    assert (prompt_off, cached_off) == (prompt, 0)
    assert answer == answer_off
