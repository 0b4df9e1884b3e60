"""The tiny model builders produce directories the real MLX loaders accept.

Everything here goes through the same public entry points a user's model does
(``mlx_lm.load``, ``mlx_vlm.load``, ``mlx_embeddings.load``): no mocks. The
weights are random, so the assertions are about structure (token counts,
finish reasons, shapes, norms) and determinism, never about the text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from tiny_models import (
    CHATML_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    QWEN2_VL_SPECIAL_TOKENS,
    build_bpe_tokenizer,
    build_tiny_bert,
    build_tiny_lm,
    build_tiny_qwen2_vl,
)

GENERATED_TOKENS = 64


def _sha256(path: Path) -> str:
    """Digest of a file, for byte-identity checks with readable failures."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_digests(directory: Path) -> dict[str, str]:
    """Digest of every file in ``directory``, keyed by name."""
    return {path.name: _sha256(path) for path in sorted(directory.iterdir()) if path.is_file()}


# --------------------------------------------------------------------------- tokenizer


def test_bpe_tokenizer_ids_files_and_determinism(tmp_path: Path) -> None:
    first = build_bpe_tokenizer(tmp_path / "a", extra_special_tokens=("<|tool|>",))
    second = build_bpe_tokenizer(tmp_path / "b", extra_special_tokens=("<|tool|>",))

    assert first.vocab_size == 512
    assert dict(first.special_token_ids) == {ENDOFTEXT: 0, IM_START: 1, IM_END: 2, "<|tool|>": 3}
    assert (first.eos_token_id, first.pad_token_id) == (2, 0)
    assert _tree_digests(tmp_path / "a") == _tree_digests(tmp_path / "b")
    assert first.vocab_size == second.vocab_size

    config = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert config["eos_token"] == IM_END
    assert config["pad_token"] == ENDOFTEXT
    assert config["chat_template"] == CHATML_TEMPLATE
    special_map = json.loads((tmp_path / "a" / "special_tokens_map.json").read_text())
    assert special_map["eos_token"] == IM_END


def test_chat_template_round_trip(tmp_path: Path) -> None:
    # mlx_lm's own tokenizer loader: the wrapper the worker gets from mlx_lm.load.
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    build_bpe_tokenizer(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello, world! 2 + 2 = 4?"},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [{"type": "text", "text": "Café "}, {"type": "text", "text": "déjà vu"}]},
    ]
    expected = (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHello, world! 2 + 2 = 4?<|im_end|>\n"
        "<|im_start|>assistant\nYes.<|im_end|>\n"
        "<|im_start|>user\nCafé déjà vu<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == expected
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert ids[0] == 1  # <|im_start|> is one token, not its characters
    assert ids.count(2) == 4  # one <|im_end|> per message
    assert tokenizer.decode(ids) == expected
    assert tokenizer.eos_token_ids == {2}


# --------------------------------------------------------------------------- language model


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def tiny_lm_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    arch: str = request.param
    return build_tiny_lm(tmp_path_factory.mktemp(f"lm-{arch}"), arch=arch)


def test_tiny_lm_greedy_runs_to_max_tokens(tiny_lm_dir: Path) -> None:
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(tiny_lm_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me a long story about the sea."}], add_generation_prompt=True
    )
    greedy = make_sampler(temp=0.0)
    responses = list(stream_generate(model, tokenizer, prompt, max_tokens=GENERATED_TOKENS, sampler=greedy))

    assert len(responses) == GENERATED_TOKENS
    assert responses[-1].generation_tokens == GENERATED_TOKENS
    assert responses[-1].finish_reason == "length"
    assert all(response.finish_reason is None for response in responses[:-1])
    assert not {response.token for response in responses} & {0, 1, 2}


def test_tiny_lm_suppressed_specials_never_win(tiny_lm_dir: Path) -> None:
    """The mechanism behind the predictable lengths, checked directly on logits."""
    from mlx_lm import load

    model, tokenizer = load(str(tiny_lm_dir))
    tokens = mx.array([tokenizer.encode("The market opens at 8 o'clock; prices are fair.")])
    logits = model(tokens)[0]

    assert logits.shape[-1] == 512
    np.testing.assert_array_equal(np.array(logits[:, :3]), 0.0)
    assert mx.all(logits.max(axis=-1) > 0.1).item()
    assert mx.all(mx.argmax(logits, axis=-1) >= 3).item()


def test_tiny_lm_without_suppression_keeps_special_rows(tmp_path: Path) -> None:
    from mlx_lm import load

    build_tiny_lm(tmp_path, suppress_eos=False)
    model, _tokenizer = load(str(tmp_path))
    eos_row = model.model.embed_tokens.weight[2]
    assert mx.abs(eos_row).sum().item() > 0


def test_tiny_lm_is_deterministic(tmp_path: Path) -> None:
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    first = build_tiny_lm(tmp_path / "a", arch="qwen2", seed=3)
    second = build_tiny_lm(tmp_path / "b", arch="qwen2", seed=3)
    other_seed = build_tiny_lm(tmp_path / "c", arch="qwen2", seed=4)

    assert _sha256(first / "model.safetensors") == _sha256(second / "model.safetensors")
    assert _tree_digests(first) == _tree_digests(second)
    assert _sha256(first / "model.safetensors") != _sha256(other_seed / "model.safetensors")

    texts = []
    for directory in (first, second):
        model, tokenizer = load(str(directory))
        texts.append(generate(model, tokenizer, "Once upon a time", max_tokens=16, sampler=make_sampler(temp=0.0)))
    assert texts[0] == texts[1]


def test_tiny_lm_config_follows_arguments(tmp_path: Path) -> None:
    from mlx_lm import load

    build_tiny_lm(tmp_path, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, dtype="bfloat16")
    config: dict[str, Any] = json.loads((tmp_path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (32, 1, 1)
    assert config["eos_token_id"] == 2
    model, _tokenizer = load(str(tmp_path))
    assert len(model.layers) == 1
    assert model.model.embed_tokens.weight.dtype == mx.bfloat16


def test_tiny_lm_rejects_unknown_arch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="arch"):
        build_tiny_lm(tmp_path, arch="gpt2")


# --------------------------------------------------------------------------- vision-language model


@pytest.fixture(scope="module")
def tiny_vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2-vl"))


def _small_image() -> Image.Image:
    """A 56x56 RGB noise image: exactly the processor's minimum size."""
    pixels = np.random.default_rng(0).integers(0, 256, size=(56, 56, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def test_tiny_vlm_generates_with_one_image(tiny_vlm_dir: Path) -> None:
    from mlx_vlm import apply_chat_template, generate, load, stream_generate

    model, processor = load(str(tiny_vlm_dir))
    prompt = apply_chat_template(processor, model.config, "Describe this image.", num_images=1)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    image = _small_image()
    responses = list(stream_generate(model, processor, prompt, image=[image], max_tokens=8, temperature=0.0))
    assert responses[-1].generation_tokens == 8
    assert responses[-1].prompt_tokens > len(processor.tokenizer.encode(prompt))  # the image expanded

    result = generate(model, processor, prompt, image=[image], max_tokens=8, temperature=0.0, verbose=False)
    assert result.generation_tokens == 8
    assert result.text == "".join(response.text for response in responses)


def test_tiny_vlm_processor_expands_image_tokens(tiny_vlm_dir: Path) -> None:
    from mlx_vlm import load

    config = json.loads((tiny_vlm_dir / "config.json").read_text())
    config_keys = ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id")
    assert [config[key] for key in config_keys] == [3, 4, 5, 6]

    model, processor = load(str(tiny_vlm_dir))
    tokenizer = processor.tokenizer
    assert [tokenizer.convert_tokens_to_ids(token) for token in QWEN2_VL_SPECIAL_TOKENS] == [3, 4, 5, 6]
    # Stored in torch layout like a HF checkpoint; the loader converts it.
    patch_key = "vision_tower.patch_embed.proj.weight"
    assert mx.load(str(tiny_vlm_dir / "model.safetensors"))[patch_key].shape == (32, 3, 2, 14, 14)
    assert model.vision_tower.patch_embed.proj.weight.shape == (32, 2, 14, 14, 3)

    inputs = processor(
        text=["<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n"],
        images=[_small_image()],
    )
    input_ids = np.array(inputs["input_ids"])
    # 56x56 pixels -> 4x4 patches of 14 -> merged 2x2 -> 4 image tokens.
    assert np.array(inputs["image_grid_thw"]).tolist() == [[1, 4, 4]]
    assert int((input_ids == config["image_token_id"]).sum()) == 4


# --------------------------------------------------------------------------- embeddings


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("bert"))


def test_tiny_bert_embeds_a_padded_batch(tiny_bert_dir: Path) -> None:
    from mlx_embeddings import generate, load

    model, tokenizer = load(str(tiny_bert_dir))
    texts = ["Fresh eggs.", "The keeper climbed 96 steps every evening and wrote the weather down."]
    embeddings = generate(model, tokenizer, texts=texts).text_embeds
    alone = generate(model, tokenizer, texts=[texts[0]]).text_embeds

    assert embeddings.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(np.array(embeddings), axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(np.array(embeddings[0]), np.array(embeddings[1]), atol=1e-3)
    # Padding is masked out: the short text embeds the same alone or in a batch.
    np.testing.assert_allclose(np.array(embeddings[0]), np.array(alone[0]), atol=1e-4)


def test_tiny_bert_tokenizer_and_determinism(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from mlx_embeddings import load

    _model, tokenizer = load(str(tiny_bert_dir))
    encoded = tokenizer("Baking BREAD at 220 degrees, quickly!")["input_ids"]
    assert encoded[0] == 2 and encoded[-1] == 3  # [CLS] ... [SEP]
    assert 1 not in encoded  # ASCII never needs [UNK]
    assert tokenizer.decode(encoded, skip_special_tokens=True) == "baking bread at 220 degrees, quickly!"

    rebuilt = build_tiny_bert(tmp_path)
    assert _tree_digests(rebuilt) == _tree_digests(tiny_bert_dir)
