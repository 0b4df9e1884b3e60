"""Tiers: `fast`, `balanced`, `powerful`, from a model's parameter count.

A client that asks for `tier:fast` wants an answer soon, not a particular model; the thresholds
(`[catalog] tier_thresholds`, default 7B and 14B parameters) split the catalog into three groups.
A thinking model spends many tokens before it answers, so it is never `fast`.
"""

from __future__ import annotations

from mlx_fleet.catalog.entry import Tier

TIER_PREFIX = "tier:"
# Bytes per parameter assumed when a model's headers give no count (unquantized half precision).
_BYTES_PER_PARAMETER = 2


def tier_for(parameters: int | None, size_bytes: int, bits: int | None, thinking: bool,
             thresholds: tuple[int, int]) -> Tier:
    """The tier of a model; without a parameter count, one is guessed from its weights' size."""
    if parameters is None:
        parameters = size_bytes * 8 // bits if bits else size_bytes // _BYTES_PER_PARAMETER
    fast, balanced = thresholds
    tier: Tier = "fast" if parameters < fast else "balanced" if parameters < balanced else "powerful"
    return "balanced" if thinking and tier == "fast" else tier


def tier_request(model: str) -> str | None:
    """`"fast"` for a request whose model is `"tier:fast"`; None for a model name."""
    return model[len(TIER_PREFIX):] if model.startswith(TIER_PREFIX) else None
