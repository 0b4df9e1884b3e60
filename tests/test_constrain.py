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


def test_grammar_waits_for_the_end_of_thinking(tokenizer) -> None:
    from mlx_fleet.protocol import ResponseFormat
    from worker.constrain import Grammars, response_format_grammar

    think_end = tokenizer.convert_tokens_to_ids("</think>")
    grammars = Grammars(tokenizer._tokenizer, tokenizer.eos_token_ids)
    processor = grammars.processor(response_format_grammar(ResponseFormat("json_object")), "x", think_end)
    logits = mx.zeros((1, tokenizer.vocab_size))
    prompt = mx.array(tokenizer.encode("hello"))
    processor.base = prompt.shape[0]
    thinking = mx.concatenate([prompt, mx.array(tokenizer.encode("some thoughts"))])
    assert mx.all(processor(thinking, logits) == 0).item()  # thinking: nothing masked
    done = mx.concatenate([thinking, mx.array([think_end])])
    allowed = mx.isfinite(processor(done, logits))[0]
    assert allowed.sum().item() < tokenizer.vocab_size / 4  # the answer: JSON only
    assert allowed[tokenizer.encode("{")[0]].item()


@pytest.mark.parametrize("vocab", [40, 64, 80])  # fewer ids than the mask's bits, as many, more (padded)
def test_mask_keeps_exactly_the_allowed_ids_and_the_logits_dtype(vocab: int) -> None:
    import numpy as np

    from worker.constrain import _apply_unpacked

    allowed = [0, 5, 31, 32, 39, 63]
    mask = np.zeros((1, 2), dtype=np.int32)  # 64 bits, llguidance's layout: bit i of word i // 32
    for i in allowed:
        mask[0, i // 32] |= np.int32(1 << (i % 32)) if i % 32 < 31 else np.int32(-(2**31))
    logits = mx.arange(vocab, dtype=mx.bfloat16)[None]
    out = _apply_unpacked(logits, mask)
    assert out.dtype == mx.bfloat16 and out.shape == (1, vocab)
    assert [i for i in range(vocab) if mx.isfinite(out[0, i]).item()] == [i for i in allowed if i < vocab]
    assert all(out[0, i].item() == i for i in allowed if i < vocab)
