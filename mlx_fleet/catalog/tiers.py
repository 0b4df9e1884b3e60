"""Tiers: `fast`, `balanced`, `powerful`, from a model's parameter count.

A client that asks for `tier:fast` wants an answer soon, not a particular model; the thresholds
(`[catalog] tier_thresholds`, default 7B and 14B parameters) split the catalog into three groups.
A thinking model spends many tokens before it answers, so it is never `fast`.
"""

from __future__ import annotations

import re

from mlx_fleet.catalog.entry import Tier

TIER_PREFIX = "tier:"
DEFAULT_THRESHOLDS = ("7B", "14B")
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}
# Bytes per parameter assumed when a model's headers give no count (unquantized half precision).
_BYTES_PER_PARAMETER = 2


def parse_count(text: str | int) -> int:
    """Parameters from `"7B"`, `"500M"`, `"1.5b"` or a plain number."""
    if isinstance(text, int):
        return text
    match = _COUNT.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a parameter count such as '7B' or '500M'")
    number, unit = match.groups()
    return int(float(number) * _SCALE[unit.lower()])


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
