"""`worker.engines.base`: the protocol every engine implements, and the helpers they share.

The unit tests pin the protocol's defaults and the shared helpers; the real ones start
`python -m mlx_fleet.worker` on tiny real models and send it a request of the kind its engine does not
serve (the router refuses those first, so only the worker's own check answers here).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from mlx_fleet.protocol import (
    ChatInput,
    Embed,
    Failure,
    Generate,
    Kind,
    Message,
    Sampling,
    encode,
)
from tiny_models import build_tiny_bert
from worker_process import end_of, worker
from mlx_fleet.worker.engines.base import (
    DEFAULT_CONTEXT,
    Engine,
    Unsupported,
    config_value,
    context_length_of,
    tokenizer_limit,
    vocab_size,
)

class Bare(Engine):
    def __init__(self) -> None:
        self.context_length = 8


def test_defaults_refuse_what_an_engine_does_not_serve_and_have_nothing_to_run() -> None:
    engine = Bare()
    with pytest.raises(Unsupported, match="^chat and text completions$"):
        engine.submit(b"r", Generate(ChatInput((Message("user", "hi"),)), Sampling(max_tokens=1)))
    with pytest.raises(Unsupported, match="^embeddings$"):
        engine.embed(Embed(texts=("x",)))
    sent: list[tuple[bytes, bytes, bytes]] = []
    emit = lambda *frame: sent.append(frame)  # noqa: E731
    assert engine.active is False
    engine.step(emit)
    engine.cancel(b"r", emit)
    engine.cancel_all(emit)
    assert sent == []


def test_config_value_prefers_the_language_part_and_reads_dicts_and_objects() -> None:
    nested = SimpleNamespace(vocab_size=10, text_config={"vocab_size": 7})
    assert config_value(nested, "vocab_size") == 7
    assert config_value({"vocab_size": 5, "text_config": SimpleNamespace(hidden=1)}, "vocab_size") == 5
    assert config_value(None, "vocab_size") is None
    assert config_value({"text_config": None}, "vocab_size") is None


def test_vocab_size_is_the_embedding_table_else_the_tokenizer() -> None:
    assert vocab_size({"vocab_size": 300}, ["a"] * 5) == 300
    assert vocab_size({"vocab_size": 0}, ["a"] * 5) == 5
    assert vocab_size(None, ["a"] * 5) == 5


def test_tokenizer_limit_ignores_no_limit_sentinels() -> None:
    assert tokenizer_limit(SimpleNamespace(model_max_length=2048)) == 2048
    assert tokenizer_limit(SimpleNamespace(model_max_length=int(1e30))) is None
    assert tokenizer_limit(SimpleNamespace(model_max_length=0)) is None
    assert tokenizer_limit(object()) is None
    assert DEFAULT_CONTEXT == 4096


def test_context_length_is_the_position_table_else_a_real_tokenizer_limit_else_the_default() -> None:
    no_limit = SimpleNamespace(model_max_length=int(1e30))
    assert context_length_of({"max_position_embeddings": 8192}, SimpleNamespace(model_max_length=2048)) == 8192
    assert context_length_of(SimpleNamespace(text_config={"max_position_embeddings": 32768}), no_limit) == 32768
    assert context_length_of({"max_position_embeddings": 0}, SimpleNamespace(model_max_length=2048)) == 2048
    assert context_length_of({}, no_limit) == DEFAULT_CONTEXT  # never the tokenizer's "no limit" sentinel
    assert context_length_of(None, object(), 512) == 512


def test_every_engine_is_an_engine() -> None:
    from mlx_fleet.worker.engines.embed import EmbeddingEngine
    from mlx_fleet.worker.engines.text import TextEngine
    from mlx_fleet.worker.engines.vision import VisionEngine

    assert all(Engine in e.__mro__ for e in (TextEngine, VisionEngine, EmbeddingEngine))


# --------------------------------------------------------------------------- a real worker process


def test_text_worker_refuses_embeddings_and_still_serves(tiny_lm: Path) -> None:
    with worker(tiny_lm, "text") as (control, _, ready):
        assert ready.context_length > 0
        control.send_multipart((b"w", Kind.EMBED, b"e1", encode(Embed(texts=("x",)))))
        failure = end_of(control, b"e1")
        assert failure == Failure("model_not_supported", "Model 'm' does not support embeddings.", 400, "model")
        request = Generate(ChatInput((Message("user", "hi"),)), Sampling(max_tokens=3))
        control.send_multipart((b"w", Kind.GENERATE, b"g1", encode(request)))
        assert end_of(control, b"g1").usage.completion_tokens >= 1


def test_embedding_worker_refuses_generation_and_reports_its_input_limit(tmp_path: Path) -> None:
    bert = build_tiny_bert(tmp_path / "tiny-bert")
    with worker(bert, "embeddings") as (control, _, ready):
        assert ready.context_length == 512  # the tiny BERT's tokenizer limit and position table
        request = Generate(ChatInput((Message("user", "hi"),)), Sampling(max_tokens=3))
        control.send_multipart((b"w", Kind.GENERATE, b"g1", encode(request)))
        failure = end_of(control, b"g1")
        assert failure == Failure("model_not_supported", "Model 'm' does not support chat and text completions.",
                                  400, "model")
