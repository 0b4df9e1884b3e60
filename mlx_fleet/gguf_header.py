"""A GGUF file's metadata and tensor table, read in plain Python (no MLX, no tensor data).

The catalog lists GGUF files in the scan folders without importing MLX (the supervisor and the
router never do) and without reading gigabytes of weights: the header alone says the
architecture, the context length, the chat template and every tensor's shape and type. The
rules for what the worker's converter (`worker/gguf/convert.py`) accepts live here too, so the catalog
lists exactly the files a worker can load, and both apply the same rules.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

MAGIC: Final[bytes] = b"GGUF"

# Value types of metadata entries (the GGUF spec's `gguf_metadata_value_type`).
_SCALARS: Final[dict[int, str]] = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9

# Tensor types MLX's GGUF reader unpacks: F32, F16, Q4_0, Q4_1, Q8_0 (K-quants it cannot).
READABLE_TENSOR_TYPES: Final[dict[int, str]] = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}
_TENSOR_BITS: Final[dict[int, int]] = {2: 4, 3: 4, 8: 8}


class GGUFHeaderError(ValueError):
    """Not a GGUF file, or one cut short."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    type: int


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict[str, Any]
    tensors: tuple[Tensor, ...]

    @property
    def parameters(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors)

    def quantization(self) -> dict[str, int] | None:
        """The most common quantized tensor type as `{"bits", "group_size"}`, if any tensor is."""
        bits = [_TENSOR_BITS[t.type] for t in self.tensors if t.type in _TENSOR_BITS]
        if not bits:
            return None
        return {"bits": max(set(bits), key=lambda b: (bits.count(b), b)), "group_size": 32}


def read_header(path: Path) -> GGUFHeader:
    """Metadata (arrays of strings, e.g. the vocabulary, are skipped: the catalog needs none)."""
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise GGUFHeaderError(f"{path}: not a GGUF file")
        version, n_tensors, n_kv = _unpack(f, "<IQQ")
        if version < 2:
            raise GGUFHeaderError(f"{path}: GGUF version {version} is too old")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = _string(f)
            metadata[key] = _value(f, _unpack(f, "<I")[0])
        tensors = []
        for _ in range(n_tensors):
            name = _string(f)
            (n_dims,) = _unpack(f, "<I")
            shape = _unpack(f, f"<{n_dims}Q")
            kind, _offset = _unpack(f, "<IQ")
            tensors.append(Tensor(name, tuple(shape), kind))
    return GGUFHeader(metadata, tuple(tensors))


def unsupported_reason(get: Callable[[str], Any]) -> str | None:
    """Why the converter refuses a GGUF with this metadata, or None if it takes it."""
    arch = get("general.architecture")
    if arch != "llama":
        return f"unsupported architecture {arch!r}; only 'llama' GGUF files can be converted"
    if (get("llama.expert_count") or 0) > 0:
        return "mixture-of-experts llama models are not supported"
    scaling = get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        return f"RoPE scaling {scaling!r} is not supported"
    return None


def convertible(header: GGUFHeader) -> str | None:
    """Why a worker could not load this file (its metadata or a tensor type), or None."""
    reason = unsupported_reason(header.metadata.get)
    if reason is not None:
        return reason
    unreadable = {t.type for t in header.tensors} - READABLE_TENSOR_TYPES.keys()
    if unreadable:
        return f"tensor types {sorted(unreadable)} cannot be read by MLX"
    return None


def _unpack(f: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = f.read(size)
    if len(data) != size:
        raise GGUFHeaderError("the header is cut short")
    return struct.unpack(fmt, data)


def _string(f: BinaryIO) -> str:
    (length,) = _unpack(f, "<Q")
    data = f.read(length)
    if len(data) != length:
        raise GGUFHeaderError("the header is cut short")
    return data.decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _unpack(f, _SCALARS[kind])[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _unpack(f, "<IQ")
        if item in _SCALARS:
            size = struct.calcsize(_SCALARS[item])
            f.seek(size * count, 1)  # numeric arrays (token scores, types): skipped whole
            return None
        for _ in range(count):
            _value(f, item)
        return None
    raise GGUFHeaderError(f"unknown metadata value type {kind}")
