"""The memory policy: which workers must go so that a model fits. A pure function of measured state.

Nothing here touches a process or a clock; the supervisor takes a snapshot of its workers, asks
`make_room`, and carries out the plan. That keeps every decision testable in microseconds and
keeps the rules in one place:

- pinned (preloaded or admin-loaded) workers are never chosen;
- a loading worker is never chosen (its memory is still arriving);
- idle workers go first, least recently used first; busy ones only if that is not enough, and
  they are drained (their requests finish), never killed;
- if even evicting every candidate would not make room, nothing is evicted and the answer says
  why, with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlx_fleet.units import fmt_bytes


@dataclass(frozen=True, slots=True)
class Resident:
    """One worker that holds (or is about to hold) memory."""

    model_id: str
    bytes: int
    pinned: bool = False
    busy: bool = False
    loading: bool = False
    last_used: float = 0.0


@dataclass(frozen=True, slots=True)
class Plan:
    fits: bool
    evict: tuple[str, ...] = ()   # idle: end now
    drain: tuple[str, ...] = ()   # busy: stop taking requests, end when their requests are done
    reason: str = ""


def in_use(residents: list[Resident]) -> int:
    return sum(r.bytes for r in residents)


def make_room(residents: list[Resident], needed: int, budget: int, max_models: int) -> Plan:
    """Choose the fewest least-recently-used workers whose end lets `needed` bytes fit."""
    used, count = in_use(residents), len(residents)
    if used + needed <= budget and count < max_models:
        return Plan(fits=True)
    candidates = sorted((r for r in residents if not r.pinned and not r.loading),
                        key=lambda r: (r.busy, r.last_used))
    chosen: list[Resident] = []
    for r in candidates:
        if used + needed <= budget and count < max_models:
            break
        chosen.append(r)
        used -= r.bytes
        count -= 1
    if used + needed <= budget and count < max_models:
        return Plan(
            fits=True,
            evict=tuple(r.model_id for r in chosen if not r.busy),
            drain=tuple(r.model_id for r in chosen if r.busy),
        )
    return Plan(fits=False, reason=_why_not(residents, needed, budget, max_models))


def _why_not(residents: list[Resident], needed: int, budget: int, max_models: int) -> str:
    pinned = [r for r in residents if r.pinned]
    loading = [r for r in residents if r.loading and not r.pinned]
    parts = [f"needs {fmt_bytes(needed)}; budget {fmt_bytes(budget)}, in use {fmt_bytes(in_use(residents))} "
             f"by {len(residents)} of at most {max_models} models"]
    if pinned:
        parts.append("pinned: " + ", ".join(f"{r.model_id} ({fmt_bytes(r.bytes)})" for r in pinned))
    if loading:
        parts.append("loading: " + ", ".join(f"{r.model_id} ({fmt_bytes(r.bytes)})" for r in loading))
    if needed > budget:
        parts.append("the model alone is larger than the budget")
    return "; ".join(parts)


def over_budget(residents: list[Resident], budget: int) -> tuple[str, ...]:
    """Idle, unpinned workers to end, LRU first, when measured use grew past the budget (KV caches)."""
    used = in_use(residents)
    victims = []
    for r in sorted((r for r in residents if not r.pinned and not r.loading and not r.busy),
                    key=lambda r: r.last_used):
        if used <= budget:
            break
        victims.append(r.model_id)
        used -= r.bytes
    return tuple(victims)


def expired(residents: list[Resident], now: float, ttl: dict[str, float]) -> tuple[str, ...]:
    """Idle, unpinned workers whose idle time passed their TTL (0 = never)."""
    return tuple(
        r.model_id for r in residents
        if not r.pinned and not r.busy and not r.loading
        and ttl.get(r.model_id, 0) > 0 and now - r.last_used >= ttl[r.model_id]
    )
