"""Seeded random weights for the fixture models: scaled, cast, and with the special tokens muted."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Final

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map

# Multiplies the library's default initialisation. At full scale the top two
# logits of these 2-layer models came within 0.01 of each other, so a greedy
# pick could flip with a different kernel or batch shape; at 0.5 the gap
# measured >= 0.3 (the model then mostly echoes its current input token, via the
# tied embeddings), which keeps greedy outputs stable across code paths.
_INIT_SCALE: Final[float] = 0.5


def mx_dtype(name: str) -> mx.Dtype:
    """Map a dtype name such as ``"float32"`` to the MLX dtype, rejecting others."""
    dtype = getattr(mx, name, None)
    if not isinstance(dtype, mx.Dtype) or not mx.issubdtype(dtype, mx.floating):
        raise ValueError(f"unsupported floating dtype {name!r}")
    return dtype


def random_parameters(model: nn.Module, dtype: mx.Dtype) -> None:
    """Scale the (seeded) default initialisation and cast it to ``dtype``."""
    model.update(tree_map(partial(_scale_and_cast, dtype=dtype), model.parameters()))
    mx.eval(model.parameters())


def _scale_and_cast(parameter: mx.array, *, dtype: mx.Dtype) -> mx.array:
    """One parameter multiplied by :data:`_INIT_SCALE` and cast to ``dtype``."""
    return (parameter * _INIT_SCALE).astype(dtype)


def zero_rows(weight: mx.array, rows: Sequence[int]) -> mx.array:
    """A copy of ``weight`` with ``rows`` set to zero (the tied embedding's special tokens)."""
    mask = mx.ones((weight.shape[0], 1), dtype=weight.dtype)
    mask[mx.array(list(rows))] = 0
    return weight * mask
