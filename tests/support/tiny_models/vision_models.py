"""A tiny random-weight Qwen2-VL, the vision-language fixture ``mlx_vlm.load`` accepts."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from tiny_models.chat_templates import ENDOFTEXT, QWEN2_VL_CHAT_TEMPLATE, QWEN2_VL_SPECIAL_TOKENS
from tiny_models.files import write_json
from tiny_models.random_weights import mx_dtype, random_parameters, zero_rows
from tiny_models.tokenizer_files import TokenizerInfo, build_bpe_tokenizer


def build_tiny_qwen2_vl(
    out_dir: Path,
    *,
    seed: int = 0,
    dtype: str = "float32",
    suppress_eos: bool = True,
) -> Path:
    """Write a random-weight Qwen2-VL directory that ``mlx_vlm.load`` accepts.

    Qwen2-VL is the simplest VLM to fake: mlx-vlm ships a numpy image processor
    for it, so no torchvision is needed. Text model: hidden 64, 2 layers, 4 heads
    (2 kv), head_dim 16, mrope sections [2, 3, 3] (they must sum to
    head_dim / 2). Vision tower: depth 2, embed_dim 32, 2 heads, 14-pixel
    patches merged 2x2, so a 56x56 image becomes 4 ``<|image_pad|>`` tokens
    (``min_pixels`` = 56*56, ``max_pixels`` = 112*112 keep images tiny).
    ``suppress_eos`` works as in :func:`build_tiny_lm`.
    """
    weights_dtype = mx_dtype(dtype)
    # Imported here, not at module level: ``import mlx_lm`` costs ~2 s (transformers).
    from mlx_lm.utils import save_config

    info = build_bpe_tokenizer(
        out_dir,
        vocab_size=512,
        extra_special_tokens=QWEN2_VL_SPECIAL_TOKENS,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
        model_max_length=4096,
    )
    config = _qwen2_vl_config(info, dtype)
    weights = _random_qwen2_vl_weights(config, seed, weights_dtype)
    if suppress_eos:
        key = "language_model.model.embed_tokens.weight"
        weights[key] = zero_rows(weights[key], sorted(info.special_token_ids.values()))
    # Store the Conv3d patch kernel in torch layout [out, in, t, kh, kw] as HF
    # checkpoints do, so loading takes the same path as a real model: the
    # loader's VisionModel.sanitize guesses the layout from the shape and
    # transposes to MLX's [out, t, kh, kw, in] when it looks like torch's.
    patch_key = "vision_tower.patch_embed.proj.weight"
    weights[patch_key] = weights[patch_key].transpose(0, 4, 1, 2, 3)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    save_config(copy.deepcopy(config), out_dir / "config.json", keep_vision_config=True)
    _write_processor_files(out_dir)
    return out_dir


def _qwen2_vl_config(info: TokenizerInfo, dtype: str) -> dict[str, Any]:
    """The ``config.json`` (its ``vision_config`` included) of the tiny Qwen2-VL over ``info``'s vocabulary."""
    vision_config: dict[str, Any] = {
        "model_type": "qwen2_vl",
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
        # transformers validates this config strictly: a float fails to load.
        "mlp_ratio": 2,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": info.vocab_size,
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        # The three sections (temporal, height, width) must sum to head_dim / 2 = 8.
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
        "tie_word_embeddings": True,
        # Qwen's bos is <|endoftext|>; transformers' default (151643) would be
        # outside this vocabulary and draw a warning on every load.
        "bos_token_id": info.token_id(ENDOFTEXT),
        "eos_token_id": info.eos_token_id,
        "pad_token_id": info.pad_token_id,
        "image_token_id": info.token_id("<|image_pad|>"),
        "video_token_id": info.token_id("<|video_pad|>"),
        "vision_start_token_id": info.token_id("<|vision_start|>"),
        "vision_end_token_id": info.token_id("<|vision_end|>"),
        "torch_dtype": dtype,
        "vision_config": vision_config,
    }


def _random_qwen2_vl_weights(config: Mapping[str, Any], seed: int, dtype: mx.Dtype) -> dict[str, mx.array]:
    """``mlx_vlm``'s Qwen2-VL for ``config``, its weights drawn from ``seed``, scaled and cast: by name."""
    # Imported here: ``import mlx_vlm`` costs ~2.5 s.
    from mlx_vlm.models import qwen2_vl

    model_config = qwen2_vl.ModelConfig.from_dict(copy.deepcopy(config))
    model_config.text_config = qwen2_vl.TextConfig.from_dict(model_config.text_config)
    model_config.vision_config = qwen2_vl.VisionConfig.from_dict(copy.deepcopy(config["vision_config"]))
    mx.random.seed(seed)
    model = qwen2_vl.Model(model_config)
    random_parameters(model, dtype)
    return dict(tree_flatten(model.parameters()))


def _write_processor_files(out_dir: Path) -> None:
    """The image, video and processor settings, and the chat template, that ``mlx_vlm``'s processor reads."""
    image_processor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2VLProcessor",
        "min_pixels": 56 * 56,
        "max_pixels": 112 * 112,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "do_convert_rgb": True,
    }
    write_json(out_dir / "preprocessor_config.json", image_processor)
    # Without this file the processor calls hf_hub_download with the directory
    # as repo id (harmless for absolute paths, a network request for relative
    # ones such as "models/tiny") before falling back to the image settings.
    write_json(out_dir / "video_preprocessor_config.json", image_processor)
    write_json(out_dir / "processor_config.json", {"processor_class": "Qwen2VLProcessor"})
    (out_dir / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE, encoding="utf-8")
