"""Durations and sizes as people write them in the config ("30m", "48GiB", "75%"), parsed once.

`Duration` is a float of seconds and `ByteSize` an int of bytes, so every use is plain
arithmetic; each also keeps the text it was parsed from (`.text`), which is how the resolved
config travels to the supervisor and parses back to the same value. A `MemoryBudget` may be a
share of physical memory, which means nothing until it meets a machine: it stays a share until
`of(total)` is asked for bytes.
"""

from __future__ import annotations

import re
from typing import Any

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
_COUNT_SCALE = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "t": 10**12}


class _AsWritten:
    """A config value that remembers its text: it round-trips, copies and prints as written."""

    __slots__ = ()
    text: str

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return type(self), (self.text,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"


class Duration(_AsWritten, float):
    """Seconds, from `"30m"`, `"1h30m"`, `"10s"`, `"250ms"`, `"1.5h"`, `"0"` or `"12"` (seconds)."""

    def __new__(cls, text: str) -> Duration:
        value = super().__new__(cls, _seconds(text))
        value.text = text.strip()
        return value


class ByteSize(_AsWritten, int):
    """Bytes, from `"48GiB"`, `"512MB"`, `"1KiB"`, `"100B"` or `"1234"` (decimal and binary units)."""

    def __new__(cls, text: str) -> ByteSize:
        value = super().__new__(cls, _bytes(text))
        value.text = text.strip()
        return value


class MemoryBudget(_AsWritten):
    """`memory.budget`: a size (`"48GiB"`) or a share of physical memory (`"75%"`)."""

    __slots__ = ("text", "percent", "size")

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.percent: float | None = None
        self.size: int | None = None
        if self.text.endswith("%"):
            try:
                self.percent = float(self.text[:-1])
            except ValueError:
                raise ValueError(f"{text!r} is not a share such as '75%'") from None
            if not 0 < self.percent <= 100:
                raise ValueError(f"{text!r}: a share must be between 0 and 100%")
        else:
            self.size = _bytes(text)
            if self.size <= 0:
                raise ValueError("must be more than 0 bytes")

    def of(self, total: int) -> int:
        """Bytes on a machine with `total` bytes of physical memory."""
        return self.size if self.size is not None else int(total * self.percent / 100)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MemoryBudget) and (self.percent, self.size) == (other.percent, other.size)

    def __hash__(self) -> int:
        return hash((self.percent, self.size))


class ParameterCount(_AsWritten, int):
    """A model's number of parameters, from `"7B"`, `"500M"`, `"1.5b"`, `"300K"` or `"1234"`."""

    def __new__(cls, text: str) -> ParameterCount:
        match = _COUNT.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a parameter count such as '7B' or '500M'")
        number, unit = match.groups()
        value = super().__new__(cls, int(float(number) * _COUNT_SCALE[unit.lower()]))
        value.text = text.strip()
        return value


TEXT_VALUES: tuple[type[Any], ...] = (Duration, ByteSize, MemoryBudget, ParameterCount)
"""The config value types that are written as text and parsed once."""


def _bytes(text: str) -> int:
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a size such as '48GiB', '512MB' or '75%'")
    number, unit = match.groups()
    return int(float(number) * _UNITS[(unit or "").lower()])


def _seconds(text: str) -> float:
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return float(stripped)
    parts = _DURATION_PART.findall(stripped)
    if not parts or "".join(n + u for n, u in parts) != stripped:
        raise ValueError(f"{text!r} is not a duration such as '30m', '1h', '10s' or '0'")
    return sum(float(n) * _SECONDS[u] for n, u in parts)


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
