"""The converter's weights (`gguf.convert`): GGUF tensor names to mlx-lm's llama layout, kept
quantized or dequantized to float32, and the `config.json` that describes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import mlx.core as mx

from mlx_fleet.worker.gguf.read import GGUFConversionError, Metadata

# MLX's GGUF reader unpacks Q4_0, Q4_1 and Q8_0 blocks (32 values each) into
# affine quantization with one scale/bias pair per 32 values.
_GGUF_GROUP_SIZE: Final[int] = 32
_VALID_BITS: Final[frozenset[int]] = frozenset({2, 3, 4, 5, 6, 8})

# GGUF per-block tensor names -> mlx-lm llama module paths.
_LAYER_MODULES: Final[Mapping[str, str]] = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_LEVEL_MODULES: Final[Mapping[str, str]] = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
# "weight" for every tensor, plus "scales"/"biases" for quantized ones. A
# plain "bias" (attention/MLP bias) would need extra config and is rejected.
_TENSOR_SUFFIXES: Final[frozenset[str]] = frozenset({"weight", "scales", "biases"})


def _mlx_tensor_name(src: Path, name: str) -> str:
    """Map a GGUF tensor name (``blk.3.attn_q.weight``) to mlx-lm's (``model.layers.3.self_attn.q_proj.weight``)."""
    module, _, suffix = name.rpartition(".")
    if suffix in _TENSOR_SUFFIXES:
        if module in _TOP_LEVEL_MODULES:
            return f"{_TOP_LEVEL_MODULES[module]}.{suffix}"
        parts = module.split(".")
        if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in _LAYER_MODULES:
            return f"model.layers.{parts[1]}.{_LAYER_MODULES[parts[2]]}.{suffix}"
    if name == "rope_freqs.weight":
        raise GGUFConversionError(f"{src}: llama3-style RoPE frequency scaling (rope_freqs) is not supported")
    raise GGUFConversionError(f"{src}: unsupported tensor {name!r} for the llama architecture")


def _quantized_bits(src: Path, module: str, weight: mx.array, scales: mx.array) -> int:
    """Infer the bit width of an affine-quantized tensor from its packed shape.

    Each row holds ``scales.shape[-1] * group_size`` values packed into
    ``weight.shape[-1]`` uint32 words.
    """
    values_per_row = scales.shape[-1] * _GGUF_GROUP_SIZE
    packed_bits = weight.shape[-1] * 32
    if weight.dtype != mx.uint32 or packed_bits % values_per_row:
        raise GGUFConversionError(f"{src}: quantized tensor {module!r} has an unexpected layout")
    bits = packed_bits // values_per_row
    if bits not in _VALID_BITS:
        raise GGUFConversionError(f"{src}: quantized tensor {module!r} has unsupported {bits}-bit packing")
    return bits


def convert_tensors(
    src: Path, tensors: Mapping[str, mx.array], dtype: str
) -> tuple[dict[str, mx.array], dict[str, int]]:
    """Rename the tensors and apply ``dtype``.

    Returns the mlx-lm weights and, for ``keep``, the bits of every module that
    stays quantized (empty for ``float32``). Arrays stay lazy; they are only
    computed when saved.
    """
    renamed = {_mlx_tensor_name(src, name): value for name, value in tensors.items()}
    weights: dict[str, mx.array] = {}
    quantized: dict[str, int] = {}
    for name in sorted(renamed):
        module, _, suffix = name.rpartition(".")
        if suffix == "biases":
            continue  # Handled together with its ".scales".
        value = renamed[name]
        if suffix == "weight" and f"{module}.scales" in renamed:
            continue  # Handled together with its ".scales".
        if suffix == "scales":
            weight = renamed.get(f"{module}.weight")
            biases = renamed.get(f"{module}.biases")
            if weight is None or biases is None:
                raise GGUFConversionError(f"{src}: quantized tensor {module!r} lacks its weight or biases")
            bits = _quantized_bits(src, module, weight, value)
            if dtype == "keep":
                weights[f"{module}.weight"] = weight
                weights[f"{module}.scales"] = value
                weights[f"{module}.biases"] = biases
                quantized[module] = bits
            else:
                # Dequantize with fp32 scales/biases so no precision is lost
                # to fp16 intermediate rounding.
                weights[f"{module}.weight"] = mx.dequantize(
                    weight,
                    value.astype(mx.float32),
                    biases.astype(mx.float32),
                    group_size=_GGUF_GROUP_SIZE,
                    bits=bits,
                ).astype(mx.float32)
            continue
        weights[name] = value if dtype == "keep" else value.astype(mx.float32)
    if "model.embed_tokens.weight" not in weights:
        raise GGUFConversionError(f"{src}: the token embedding tensor 'token_embd.weight' is missing")
    return weights, quantized


def _quantization_config(quantized: Mapping[str, int]) -> dict[str, Any]:
    """mlx-lm's ``quantization`` block: the most common bits, plus per-module exceptions."""
    counts = Counter(quantized.values())
    # Ties go to the higher bit width so the choice is deterministic.
    base_bits = max(counts, key=lambda bits: (counts[bits], bits))
    config: dict[str, Any] = {"group_size": _GGUF_GROUP_SIZE, "bits": base_bits}
    for module, bits in sorted(quantized.items()):
        if bits != base_bits:
            config[module] = {"group_size": _GGUF_GROUP_SIZE, "bits": bits}
    return config


def model_config(
    meta: Metadata, weights: Mapping[str, mx.array], quantized: Mapping[str, int]
) -> dict[str, Any]:
    hidden = meta.require_int("llama.embedding_length")
    heads = meta.require_int("llama.attention.head_count")
    kv_heads = meta.get("llama.attention.head_count_kv", heads)
    if heads <= 0 or hidden % heads:
        raise GGUFConversionError(f"{meta.src}: {hidden=} is not divisible by head_count={heads}")
    head_dim = meta.get("llama.attention.key_length", hidden // heads)
    rope_dims = meta.get("llama.rope.dimension_count", head_dim)
    if rope_dims != head_dim:
        raise GGUFConversionError(
            f"{meta.src}: partial rotary embeddings ({rope_dims} of {head_dim} dims) are not supported"
        )
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "num_hidden_layers": meta.require_int("llama.block_count"),
        "intermediate_size": meta.require_int("llama.feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": meta.require_float("llama.attention.layer_norm_rms_epsilon"),
        # The embedding's row count is authoritative: it is what the weights hold.
        "vocab_size": weights["model.embed_tokens.weight"].shape[0],
        "max_position_embeddings": meta.require_int("llama.context_length"),
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        # llama.cpp's HF->GGUF converter permutes the q/k projection rows from
        # HF's half-split RoPE layout back to Meta's interleaved one. MLX's
        # "traditional" RoPE is the interleaved variant; with the default
        # (non-traditional) RoPE the model produces nothing useful.
        "rope_traditional": True,
        "tie_word_embeddings": "lm_head.weight" not in weights,
    }
    for key, meta_key in (
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
    ):
        if (token_id := meta.get(meta_key)) is not None:
            config[key] = token_id
    if quantized:
        config["quantization"] = _quantization_config(quantized)
        # mlx-lm writes both keys; older readers look at "quantization_config".
        config["quantization_config"] = config["quantization"]
    return config
