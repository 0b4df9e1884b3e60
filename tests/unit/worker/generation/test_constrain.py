"""Grammar processor and reply parser in-process, on a tiny model with Qwen's tool markers."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from tiny_models import QWEN_TOOL_TEMPLATE, TOOL_SPECIAL_TOKENS, build_tiny_lm


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from mlx_lm import load

    path = build_tiny_lm(tmp_path_factory.mktemp("m") / "tools", arch="qwen2", chat_template=QWEN_TOOL_TEMPLATE,
                         extra_special_tokens=TOOL_SPECIAL_TOKENS)
    return load(str(path))[1]


@pytest.mark.parametrize(("mode", "top_p"), [("sampler", False), ("sampler", True), ("logprobs", False),
                                             ("history", False)])
def test_grammar_waits_for_the_end_of_thinking(tokenizer, mode: str, top_p: bool) -> None:
    """In the sampler, as a logits processor where log probabilities are reported, or as a
    logits processor alone reading the history (mlx-vlm's generator)."""
    from mlx_fleet.protocol import ResponseFormat
    from mlx_fleet.worker.generation.constrain import Grammars, response_format_grammar

    think_end = tokenizer.convert_tokens_to_ids("</think>")
    grammars = Grammars(tokenizer._tokenizer, tokenizer.eos_token_ids)
    processor = grammars.processor(response_format_grammar(ResponseFormat("json_object")), "x", think_end)
    script = [*tokenizer.encode("some thoughts"), think_end, tokenizer.encode("{")[0]]
    rows: list[mx.array] = []  # the row each token was drawn from

    def sample(row: mx.array) -> mx.array:
        rows.append(row)
        return mx.array([script[len(rows) - 1]])

    processors: list = [processor]
    draw = sample
    if mode != "history":
        processors = []
        draw = processor.attach(sample, processors, logprobs=mode == "logprobs", top_p=top_p)
        assert processors == ([processor] if mode == "logprobs" else [])
    logits, history = mx.zeros((1, tokenizer.vocab_size)), mx.array(tokenizer.encode("hello"))
    for _ in script:
        row = logits
        for p in processors:
            row = p(history, row)
        history = mx.concatenate([history, draw(row)])
    assert all(mx.all(row == 0).item() for row in rows[:-1])  # thinking, </think> included: nothing masked
    allowed = mx.isfinite(rows[-1])[0]
    assert allowed.sum().item() < tokenizer.vocab_size / 4  # the answer: JSON only
    if top_p:  # renormalized over what the grammar allows
        assert abs(mx.logsumexp(rows[-1]).item()) < 1e-4
    assert allowed[tokenizer.encode("{")[0]].item()


@pytest.mark.parametrize("vocab", [40, 64, 80])  # fewer ids than the mask's bits, as many, more (padded)
def test_mask_keeps_exactly_the_allowed_ids_and_the_logits_dtype(vocab: int) -> None:
    import numpy as np

    from mlx_fleet.worker.generation.constrain import _apply_unpacked

    allowed = [0, 5, 31, 32, 39, 63]
    mask = np.zeros((1, 2), dtype=np.int32)  # 64 bits, llguidance's layout: bit i of word i // 32
    for i in allowed:
        mask[0, i // 32] |= np.int32(1 << (i % 32)) if i % 32 < 31 else np.int32(-(2**31))
    logits = mx.arange(vocab, dtype=mx.bfloat16)[None]
    out = _apply_unpacked(logits, mask)
    assert out.dtype == mx.bfloat16 and out.shape == (1, vocab)
    assert [i for i in range(vocab) if mx.isfinite(out[0, i]).item()] == [i for i in allowed if i < vocab]
    assert all(out[0, i].item() == i for i in allowed if i < vocab)
