"""The text engine with the prompt cache's disk tier: a new engine on the same model and folder
(as after an eviction or a restart) restores a prompt's prefix and answers exactly as cold."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlx_fleet.protocol import ChatInput, Done, Generate, Message, Sampling, Started
from engine_sink import Sink

PROMPT = " ".join(f"item {i} is a river, a mountain or a lake;" for i in range(40))


@pytest.fixture(scope="module")
def loaded(tiny_lm: Path):
    from mlx_lm import load

    return load(str(tiny_lm))


def engine(loaded, tiny_lm: Path, folder: Path | None):
    from mlx_fleet.worker.engines.text import TextEngine
    from mlx_fleet.worker.prompt_store.disk_tier import DiskTier

    model, tokenizer = loaded
    disk = DiskTier.open(model, tiny_lm, folder, 2**30) if folder is not None else None
    return TextEngine(model, tokenizer, 4096, disk=disk)


def answer(engine, text: str, max_tokens: int = 12) -> tuple[Started, str, Done, float]:
    sink = Sink()
    started = time.perf_counter()
    accepted = engine.submit(b"x", Generate(ChatInput((Message("user", text),)), Sampling(max_tokens=max_tokens, temperature=0.0)))
    while engine.active:
        engine.step(sink)
    return accepted, sink.text.get(b"x", ""), sink.ends[b"x"], time.perf_counter() - started


def test_a_new_engine_restores_the_prefix_from_disk_and_answers_as_cold(loaded, tiny_lm: Path, tmp_path: Path) -> None:
    first = engine(loaded, tiny_lm, tmp_path)
    started, _, _, _ = answer(first, PROMPT)
    assert started.prompt_tokens > 3 * 256
    first.disk.writer.flush()
    assert len(list(tmp_path.rglob("*/*/*"))) == (started.prompt_tokens + 12 - 1) // 256  # prompt + answer blocks

    restarted = engine(loaded, tiny_lm, tmp_path)
    follow_up = PROMPT + " Which one is item 7?"
    restored, text, done, _ = answer(restarted, follow_up, 20)
    cold_started, cold_text, _, _ = answer(engine(loaded, tiny_lm, None), follow_up, 20)
    assert cold_started.cached_tokens == 0
    assert restored.cached_tokens >= 3 * 256 and restored.cached_tokens % 256 == 0
    assert done.usage.cached_tokens == restored.cached_tokens
    assert text == cold_text


def test_a_model_whose_cache_is_not_plain_kv_has_no_disk_tier(loaded, tiny_lm: Path, tmp_path: Path) -> None:
    from mlx_lm.models.cache import RotatingKVCache

    from mlx_fleet.worker.prompt_store.disk_tier import DiskTier

    class Windowed:
        def make_cache(self):
            return [RotatingKVCache(max_size=64)]

    assert DiskTier.open(Windowed(), tiny_lm, tmp_path, 2**30) is None
    assert DiskTier.open(loaded[0], tiny_lm, tmp_path, 0) is None  # disk = "0": off


def test_a_restored_prefix_joins_the_batch_unchanged(loaded, tiny_lm: Path, tmp_path: Path) -> None:
    """A restored request that runs beside another goes into the batch with its restored cache."""
    first = engine(loaded, tiny_lm, tmp_path)
    answer(first, PROMPT)
    first.disk.writer.flush()
    first_turn = len(list(tmp_path.rglob("*/*/*")))
    follow_up = Generate(ChatInput((Message("user", PROMPT + " And item 9?"),)), Sampling(max_tokens=16, temperature=0.0))
    _, cold_text, _, _ = answer(engine(loaded, tiny_lm, None), PROMPT + " And item 9?", 16)
    restarted, sink = engine(loaded, tiny_lm, tmp_path), Sink()
    other = " ".join(f"fact {i}: the sea is wide and the hill is high." for i in range(30))
    restarted.submit(b"other", Generate(ChatInput((Message("user", other),)), Sampling(max_tokens=16, temperature=0.0)))
    started = restarted.submit(b"x", follow_up)
    assert started.cached_tokens >= 3 * 256 and len(restarted._by_uid) == 2
    while restarted.active:
        restarted.step(sink)
    assert sink.text[b"x"] == cold_text
    restarted.disk.writer.flush()  # the batch's caches are kept too: the other prompt's blocks reach the disk
    assert len(list(tmp_path.rglob("*/*/*"))) > first_turn
