"""Tiny random-weight ``mlx_lm`` language models (llama, qwen2), and tweaks that make them end or misbehave."""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import mlx.core as mx
import mlx.nn as nn
from tokenizers import Tokenizer

from tiny_models.chat_templates import CHATML_TEMPLATE
from tiny_models.files import write_json
from tiny_models.random_weights import mx_dtype, random_parameters, zero_rows
from tiny_models.tokenizer_files import TokenizerInfo, build_bpe_tokenizer

_LM_ARCHITECTURES: Final[Mapping[str, str]] = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}


def build_tiny_lm(
    out_dir: Path,
    *,
    arch: str = "llama",
    hidden_size: int = 64,
    num_layers: int = 2,
    intermediate_size: int = 128,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    dtype: str = "float32",
    max_position_embeddings: int = 2048,
    seed: int = 0,
    suppress_eos: bool = True,
    chat_template: str = CHATML_TEMPLATE,
    extra_special_tokens: Sequence[str] = (),
) -> Path:
    """Write a random-weight ``mlx_lm`` model directory and return ``out_dir``.

    The model is the real ``mlx_lm.models.<arch>.Model`` (``"llama"`` or
    ``"qwen2"``) with tied embeddings, saved with ``mlx_lm.utils.save_model``
    and ``save_config`` so ``mlx_lm.load(str(out_dir))`` treats it like any
    converted checkpoint. float32 is the default because MLX's bf16/fp16 CPU
    kernels are slow on Linux. ``suppress_eos`` zeroes the embedding rows of the
    special tokens (EOS included) so greedy decoding never stops early. ``chat_template`` and
    ``extra_special_tokens`` make tool-calling and thinking fixtures (:data:`QWEN_TOOL_TEMPLATE`
    with :data:`TOOL_SPECIAL_TOKENS`).
    """
    if arch not in _LM_ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(_LM_ARCHITECTURES)}, not {arch!r}")
    weights_dtype = mx_dtype(dtype)
    # Imported here, not at module level: ``import mlx_lm`` costs ~2 s
    # (transformers) and tests that only need BERT should not pay for it.
    from mlx_lm.utils import save_config, save_model

    info = build_bpe_tokenizer(out_dir, extra_special_tokens=extra_special_tokens, chat_template=chat_template,
                               model_max_length=max_position_embeddings)
    config = _lm_config(arch, info, dtype, hidden_size=hidden_size, num_layers=num_layers,
                        intermediate_size=intermediate_size, num_heads=num_heads, num_kv_heads=num_kv_heads,
                        max_position_embeddings=max_position_embeddings)
    model = _random_lm(config, seed, weights_dtype)
    if suppress_eos:
        embedding = model.model.embed_tokens.weight
        model.model.embed_tokens.weight = zero_rows(embedding, sorted(info.special_token_ids.values()))
        mx.eval(model.parameters())

    save_model(out_dir, model)
    save_config(config, out_dir / "config.json")
    return out_dir


def _lm_config(arch: str, info: TokenizerInfo, dtype: str, *, hidden_size: int, num_layers: int,
               intermediate_size: int, num_heads: int, num_kv_heads: int,
               max_position_embeddings: int) -> dict[str, Any]:
    """The ``config.json`` of a tied-embedding ``arch`` model over ``info``'s vocabulary."""
    return {
        "model_type": arch,
        "architectures": [_LM_ARCHITECTURES[arch]],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "head_dim": hidden_size // num_heads,
        "rms_norm_eps": 1e-6,
        "vocab_size": info.vocab_size,
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": 10000.0,
        "rope_traditional": False,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": info.eos_token_id,
        "pad_token_id": info.pad_token_id,
        "torch_dtype": dtype,
    }


def _random_lm(config: Mapping[str, Any], seed: int, dtype: mx.Dtype) -> nn.Module:
    """``mlx_lm``'s model for ``config``, its weights drawn from ``seed``, scaled and cast to ``dtype``."""
    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(copy.deepcopy(config)))
    random_parameters(model, dtype)
    return model


def end_answers_at(model_dir: Path, text: str) -> Path:
    """Make a built model end its answers where it would write ``text`` (one token): that token
    joins ``eos_token_id`` in ``config.json``, which mlx-lm reads as the end of a sequence.

    Random weights (with ``suppress_eos``) never reach the real end-of-sequence token, so every
    answer ends at its length limit; a client that needs a finished answer (an agent's final
    output, a Responses ``response.completed``) needs a model that ends on its own. Greedy
    decoding of these models soon repeats one token, so ending at that token ends every answer.
    """
    (token,) = Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids
    config = json.loads((model_dir / "config.json").read_text())
    eos = config["eos_token_id"]
    config["eos_token_id"] = [*(eos if isinstance(eos, list) else [eos]), token]
    write_json(model_dir / "config.json", config)
    return model_dir


def always_writes(model_dir: Path, token: str) -> Path:
    """Make a model built by :func:`build_tiny_lm` write the special ``token`` at every step
    (a model that opens a tool call and never writes one that parses).

    Greedy decoding of random weights settles on repeating one token; ``token``'s (tied)
    embedding row becomes a copy of that token's, 5% longer. Its logit then beats the other's
    wherever that one's is positive, and as input it acts as the other did, so the model keeps
    writing it. The settled token can change with the new row: repeated until it is ``token``.
    """
    from mlx_lm import load
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.utils import save_model

    model, tokenizer = load(str(model_dir))
    target = tokenizer.convert_tokens_to_ids(token)
    prompt = mx.array(tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True))
    for _ in range(4):
        written = [t for t, _ in generate_step(prompt, model, max_tokens=16, sampler=make_sampler(temp=0.0))]
        settled = max(set(written), key=written.count)
        if settled == target:
            save_model(model_dir, model)
            return model_dir
        embedding = model.model.embed_tokens.weight
        embedding[target] = 1.05 * embedding[settled]
        model.model.embed_tokens.weight = embedding
    raise RuntimeError(f"the model at {model_dir} does not settle on writing {token!r}")
