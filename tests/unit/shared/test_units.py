"""Unit tests for `mlx_fleet.units`: durations, sizes and budgets parsed once from the config's text."""

from __future__ import annotations

import copy
import pickle

import pytest

from mlx_fleet.units import ByteSize, Duration, MemoryBudget, fmt_bytes


@pytest.mark.parametrize(("text", "expected"), [
    ("48GiB", 48 * 2**30),
    ("512MB", 512 * 10**6),
    ("1KiB", 1024),
    ("2kb", 2000),
    ("1TiB", 2**40),
    ("3TB", 3 * 10**12),
    ("100B", 100),
    ("1234", 1234),
    ("0", 0),
    (" 48 gib ", 48 * 2**30),
    ("1.5GiB", int(1.5 * 2**30)),
])
def test_byte_size(text, expected):
    size = ByteSize(text)
    assert size == expected and isinstance(size, int)
    assert size.text == text.strip()


@pytest.mark.parametrize("text", ["", "lots", "48K", "GiB", "-5GB", "4 8GB", "1e3", "5PB", "0x10", "75%"])
def test_byte_size_junk(text):
    with pytest.raises(ValueError, match="is not a size"):
        ByteSize(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", 1800.0),
    ("1h30m", 5400.0),
    ("250ms", 0.25),
    ("10s", 10.0),
    ("2d", 172800.0),
    ("1h1m1s", 3661.0),
    ("1.5h", 5400.0),
    ("0", 0.0),
    ("12", 12.0),
    ("2.5", 2.5),
    (" 30m ", 1800.0),
])
def test_duration(text, expected):
    duration = Duration(text)
    assert isinstance(duration, float)
    assert duration == pytest.approx(expected)
    assert duration.text == text.strip()


@pytest.mark.parametrize("text", ["", "forever", "m", "30x", "1h 30m", "30m10", "h1", "-1m", "1h-30m", "30 m", "1w",
                                  "-5", "nan", "inf"])
def test_duration_junk(text):
    with pytest.raises(ValueError, match="is not a duration"):
        Duration(text)


def test_budget_share_is_resolved_only_against_a_total():
    budget = MemoryBudget("75%")
    assert (budget.percent, budget.size) == (75.0, None)
    assert budget.of(1000) == 750
    assert MemoryBudget("100%").of(1000) == 1000
    assert MemoryBudget("12.5%").of(800) == 100
    assert MemoryBudget(" 50% ").of(64 * 2**30) == 32 * 2**30


def test_budget_size_ignores_the_total():
    budget = MemoryBudget("48GiB")
    assert budget.size == 48 * 2**30 and budget.percent is None
    assert budget.of(1000) == 48 * 2**30


@pytest.mark.parametrize(("text", "problem"), [
    ("0%", "between 0 and 100%"), ("150%", "between 0 and 100%"), ("-10%", "between 0 and 100%"),
    ("nan%", "between 0 and 100%"), ("abc%", "is not a share"), ("lots", "is not a size"),
    ("0", "more than 0 bytes"), ("0GiB", "more than 0 bytes"),
])
def test_bad_budgets(text, problem):
    with pytest.raises(ValueError, match=problem):
        MemoryBudget(text)


@pytest.mark.parametrize("value", [Duration("1h30m"), ByteSize("512MiB"), MemoryBudget("75%")])
def test_values_copy_and_pickle_as_written(value):
    for copied in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert type(copied) is type(value) and copied == value and copied.text == value.text
    assert repr(value) == f"{type(value).__name__}({value.text!r})"


def test_budgets_compare_by_meaning():
    assert MemoryBudget("75%") == MemoryBudget(" 75.0% ")
    assert MemoryBudget("1KiB") == MemoryBudget("1024")
    assert MemoryBudget("75%") != MemoryBudget("50%")
    assert len({MemoryBudget("1KiB"), MemoryBudget("1024B")}) == 1


def test_fmt_bytes():
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(3 * 2**20 // 2) == "1.5 MiB"
    assert fmt_bytes(48 * 2**30) == "48.0 GiB"
