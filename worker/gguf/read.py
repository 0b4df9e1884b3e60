"""Reading a GGUF for the converter (`gguf.convert`): its tensors and metadata through MLX's own
GGUF reader, and the one error every part of the conversion raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_fleet.gguf_header import unsupported_reason


class GGUFConversionError(Exception):
    """The GGUF file cannot be converted (unreadable, or a feature we do not support)."""


@dataclass(frozen=True)
class Metadata:
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


def read_gguf(src: Path) -> tuple[dict[str, mx.array], Metadata]:
    """Load tensors (lazily) and metadata, turning MLX's reader errors into ours."""
    if not src.is_file():
        raise FileNotFoundError(f"GGUF file not found: {src}")
    try:
        tensors, raw = mx.load(str(src), format="gguf", return_metadata=True)
    except (RuntimeError, ValueError) as exc:
        # MLX raises RuntimeError for corrupt files and for tensor types it
        # cannot decode (e.g. K-quants), ValueError for I/O problems.
        raise GGUFConversionError(f"{src}: cannot read as GGUF ({exc})") from exc
    return dict(tensors), Metadata(src, raw)


def check_architecture(meta: Metadata) -> None:
    reason = unsupported_reason(meta.get)
    if reason is not None:
        raise GGUFConversionError(f"{meta.src}: {reason}")
