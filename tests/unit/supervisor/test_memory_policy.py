"""The memory policy as a pure function: no processes, no clock."""

from __future__ import annotations

from mlx_fleet.supervisor.memory.policy import Resident, expired, make_room, over_budget

MiB = 2**20


def r(model_id: str, mib: int, *, last_used: float, pinned: bool = False, busy: bool = False,
      loading: bool = False) -> Resident:
    return Resident(model_id, mib * MiB, pinned, busy, loading, last_used)


def test_fits_without_evicting() -> None:
    plan = make_room([r("a", 100, last_used=1)], 100 * MiB, 250 * MiB, 4)
    assert plan.fits and plan.evict == () and plan.drain == ()


def test_evicts_least_recently_used_idle_first() -> None:
    residents = [r("a", 100, last_used=3), r("b", 100, last_used=1), r("c", 100, last_used=2)]
    plan = make_room(residents, 100 * MiB, 250 * MiB, 8)
    assert plan.fits and plan.evict == ("b", "c") and plan.drain == ()


def test_busy_workers_are_drained_only_when_idle_ones_are_not_enough() -> None:
    residents = [r("a", 100, last_used=1, busy=True), r("b", 100, last_used=5)]
    assert make_room(residents, 100 * MiB, 250 * MiB, 8).evict == ("b",)
    plan = make_room(residents, 200 * MiB, 250 * MiB, 8)
    assert plan.fits and plan.evict == ("b",) and plan.drain == ("a",)


def test_pinned_and_loading_are_never_chosen_and_the_reason_has_numbers() -> None:
    residents = [r("a", 100, last_used=1, pinned=True), r("b", 100, last_used=2, loading=True)]
    plan = make_room(residents, 100 * MiB, 250 * MiB, 8)
    assert not plan.fits and plan.evict == ()
    assert "needs 100.0 MiB" in plan.reason and "budget 250.0 MiB" in plan.reason
    assert "in use 200.0 MiB" in plan.reason and "pinned: a" in plan.reason and "loading: b" in plan.reason


def test_model_count_limit_evicts_even_when_bytes_fit() -> None:
    plan = make_room([r("a", 1, last_used=2), r("b", 1, last_used=1)], MiB, 10**12, 2)
    assert plan.fits and plan.evict == ("b",)


def test_a_model_bigger_than_the_budget_evicts_nothing() -> None:
    plan = make_room([r("a", 100, last_used=1)], 300 * MiB, 250 * MiB, 8)
    assert not plan.fits and plan.evict == () and "larger than the budget" in plan.reason


def test_over_budget_trims_idle_unpinned_lru() -> None:
    residents = [r("a", 200, last_used=1), r("b", 200, last_used=2, busy=True), r("c", 200, last_used=3),
                 r("d", 200, last_used=0, pinned=True)]
    assert over_budget(residents, 500 * MiB) == ("a", "c")
    assert over_budget(residents, 800 * MiB) == ()


def test_ttl_expires_only_idle_unpinned() -> None:
    residents = [r("a", 1, last_used=0), r("b", 1, last_used=0, busy=True), r("c", 1, last_used=0, pinned=True),
                 r("d", 1, last_used=9), r("e", 1, last_used=0)]
    assert expired(residents, 10.0, {"a": 5, "b": 5, "c": 5, "d": 5, "e": 0}) == ("a",)
