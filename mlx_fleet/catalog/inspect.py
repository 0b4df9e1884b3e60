"""What a model's files say about it, read without loading it and without importing MLX.

A catalog scan may meet hundreds of models, so each costs a few small reads: `config.json`, the
tokenizer config (for the chat template), and the JSON header of each safetensors file (its
first 8 bytes give the header's length; the weights themselves are never read). A GGUF file's
header holds the same facts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from pathlib import Path
from typing import Any

from mlx_fleet.catalog.entry import ModelFacts, Quantization
from mlx_fleet.gguf_header import GGUFHeaderError, convertible, read_header
from mlx_fleet.model_types import classify, kind_from_name, read_json

log = logging.getLogger("mlx_fleet.catalog")

WEIGHT_SUFFIX = ".safetensors"
# A safetensors header bigger than this is not one (a corrupt or foreign file): not read.
MAX_HEADER_BYTES = 100 * 2**20
_CONTEXT_KEYS = ("max_position_embeddings", "max_sequence_length", "seq_length", "n_positions",
                 "model_max_length", "n_ctx")
_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


class NotAModel(Exception):
    """The path holds no model a worker could load; the message says why."""


def describe_dir(directory: Path, name: str) -> ModelFacts:
    """Facts of an MLX / Hugging Face model directory (`config.json` and safetensors weights)."""
    config = read_json(directory / "config.json")
    if config is None:
        raise NotAModel(f"{directory}: no readable config.json")
    weights = sorted((e for e in os.scandir(directory) if e.name.endswith(WEIGHT_SUFFIX) and e.is_file()),
                     key=lambda e: e.name)
    if not weights:
        raise NotAModel(f"{directory}: no safetensors weights")
    kind = classify(config, directory)
    if kind == "text":
        kind = kind_from_name(name) or kind
    quantization = _quantization(config)
    template = _chat_template(directory)
    architectures = config.get("architectures") or []
    return ModelFacts(
        type=kind,
        architecture=str(architectures[0]) if architectures else config.get("model_type"),
        size_bytes=sum(e.stat().st_size for e in weights),
        parameters=_parameter_count([Path(e.path) for e in weights], config),
        quantization=quantization,
        context_length=_context_length(config),
        supports_tools="tools" in template,
        thinking=_thinks(template),
    )


def describe_gguf(path: Path) -> ModelFacts:
    """Facts of a GGUF file the worker's converter accepts (`NotAModel` for one it refuses)."""
    try:
        header = read_header(path)
    except (GGUFHeaderError, OSError) as e:
        raise NotAModel(f"{path}: {e}") from None
    reason = convertible(header)
    if reason is not None:
        raise NotAModel(f"{path}: {reason}")
    meta = header.metadata
    quantization = header.quantization()
    template = meta.get("tokenizer.chat_template") or ""
    return ModelFacts(
        type="text",
        architecture=meta.get("general.architecture"),
        size_bytes=path.stat().st_size,
        parameters=header.parameters,
        quantization=Quantization(**quantization) if quantization else None,
        context_length=meta.get("llama.context_length"),
        supports_tools="tools" in template,
        thinking=_thinks(template),
    )


def _quantization(config: dict[str, Any]) -> Quantization | None:
    block = config.get("quantization") or config.get("quantization_config")
    if not isinstance(block, dict):
        return None
    bits, group = block.get("bits"), block.get("group_size")
    if isinstance(bits, int) and isinstance(group, int):
        return Quantization(bits, group)
    return None


def _context_length(config: dict[str, Any]) -> int | None:
    for section in (config, config.get("text_config") or {}):
        for key in _CONTEXT_KEYS:
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, int) and value > 0:
                return value
    return None


def _chat_template(directory: Path) -> str:
    """The chat template's text, wherever this model keeps it ('' if it has none)."""
    for name in _TEMPLATE_FILES:
        path = directory / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            return text if name.endswith(".jinja") else str((read_json(path) or {}).get("chat_template", ""))
    template = (read_json(directory / "tokenizer_config.json") or {}).get("chat_template") or ""
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        return "\n".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    return str(template)


def _thinks(template: str) -> bool:
    return "<think>" in template or "enable_thinking" in template or "reasoning_content" in template


def _parameter_count(files: list[Path], config: dict[str, Any]) -> int | None:
    """Parameters from the safetensors headers; a quantized weight counts its unpacked values."""
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        header = _safetensors_header(path)
        if header is None:
            return None
        shapes.update((k, tuple(v["shape"])) for k, v in header.items()
                      if k != "__metadata__" and isinstance(v, dict) and "shape" in v)
    block = config.get("quantization") or config.get("quantization_config") or {}
    quantized = {k.removesuffix(".scales") for k in shapes if k.endswith(".scales")}
    total = 0
    for key, shape in shapes.items():
        module, _, leaf = key.rpartition(".")
        if module not in quantized:
            total += math.prod(shape)
        elif leaf == "weight":
            bits = (block.get(module) or {}).get("bits") if isinstance(block.get(module), dict) else None
            total += math.prod(shape) * 32 // (bits or block.get("bits") or 4)
    return total


def _safetensors_header(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(length))
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None
