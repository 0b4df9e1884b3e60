"""Eviction: does the machine get a model's memory back, and how soon after the unload returns?

A model of ~1 GB (BENCH_EVICT_MODEL=medium: random llama, hidden 1024, 16 layers, fp32 on a CPU;
"small" is ~300 MB) is loaded, used for a few tokens, and unloaded, while the machine's available
memory (psutil `virtual_memory().available`, i.e. MemAvailable) is watched:

    before      median over 1 s, the fleet settled (its warm spare, if any, ready), nothing loaded
    loaded      median over 1 s after the load and a 4-token request, the fleet settled again
    back after  from the moment the unload call returns until available memory has recovered
                80% of the drop (polled every 10 ms; the median over the rounds in which it did,
                "back in" counting those; a round not back within BENCH_EVICT_WAIT (5 s) is not)
    after       median over 1 s once it is back (or when the wait ran out)

mlx-fleet side: `POST /admin/models/load/{id}` then `POST /admin/models/unload/{id}`, which
returns once the worker process has been reaped. In-process side, for contrast: what a
single-process server does to drop a model (`del` the model, `gc.collect()`, `mx.clear_cache()`),
in a fresh warm interpreter (`inproc.py`, mlx-lm imported) each round, because one that has held
the model once keeps those pages and shows no drop the next time. Its process lives on, so what
its allocator keeps stays taken.

"RSS" is the resident size of the side's own processes (the fleet: serve, supervisor, workers and
warm spare; in-process: the helper) before → loaded → after. It is immune to the rest of the
machine, which MemAvailable is not: on a shared VM other programs' memory moves it too.

How to read it: "drop" = before − loaded (what the model cost the machine), "returned" =
(after − loaded) ÷ drop (100% = everything came back; noise can push it past 100% or below 0).
This VM's available memory wanders by a few hundred MB on its own, so use a model of ~1 GB and
read medians over rounds, and check them against the RSS column.

Settings: BENCH_EVICT_MODEL (small | medium | big | smollm2; default medium), BENCH_ROUNDS
(default 5), BENCH_EVICT_WAIT (seconds, default 5). Results: bench-results/eviction.{json,png}.
"""

from __future__ import annotations

import time
from functools import partial

import psutil
import pytest

from bench_report import available, med, sample_available, save, table
from bench_streams import chat_body, one, story_prompt
from benchlib import FLEET, INPROC, InProc, Model, admin, env_float, models_setting, rounds, start_fleet, wait_settled

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

MB = 2**20


def test_eviction_returns_memory(bench_dir, state_dir, models, info):
    kind = models_setting("medium", var="BENCH_EVICT_MODEL", allowed=("small", "medium", "big", "smollm2"))[0]
    model = models.get(kind)
    n_rounds = rounds(5)
    wait = env_float("BENCH_EVICT_WAIT", 5.0)
    samples: dict[str, list[dict]] = {FLEET: [], INPROC: []}
    fleet = start_fleet(bench_dir / f"evict-{kind}", {"bench": model.path}, state_dir=state_dir)
    try:
        # Untimed: one load, so the weight files are in the page cache for both sides.
        admin(fleet, "POST", "models/load/bench")
        admin(fleet, "POST", "models/unload/bench")
        for r in range(n_rounds):
            for side in (FLEET, INPROC) if r % 2 == 0 else (INPROC, FLEET):
                samples[side].append(evict_round(side, fleet, bench_dir, model, wait))
                print_round(side, r, samples[side][-1])
    finally:
        fleet.stop()

    summary = {side: summarize(xs) for side, xs in samples.items()}
    summary[FLEET]["memory_released_mb"] = med(x.get("memory_released", 0) for x in samples[FLEET]) / MB
    eviction_table(summary, kind, model, n_rounds)
    print(f"[bench] the fleet's unload reply: memory_released {summary[FLEET]['memory_released_mb']:.0f} MB")
    save("eviction", {"model": kind, "weights_bytes": model_size_mb(model) * MB, "rounds": n_rounds, "wait_s": wait,
                      "summary": summary, "samples": samples}, partial(chart, summary, kind), info=info)


def print_round(side: str, r: int, x: dict) -> None:
    back = "-" if x["back_s"] is None else f"{x['back_s']:.3f} s"
    print(f"[bench] {side} round {r}: available drop {x['drop'] / MB:.0f} MB, returned "
          f"{fmt_share(x['returned'])}, back after {back}; RSS {x['rss_before'] / MB:.0f} → "
          f"{x['rss_loaded'] / MB:.0f} → {x['rss_after'] / MB:.0f} MB")


def summarize(xs: list[dict]) -> dict:
    """One side's medians over its rounds."""
    return {
        "before_mb": med(x["before"] for x in xs) / MB,
        "loaded_mb": med(x["loaded"] for x in xs) / MB,
        "after_mb": med(x["after"] for x in xs) / MB,
        "drop_mb": med(x["drop"] for x in xs) / MB,
        "returned": med(x["returned"] for x in xs),
        "rss_before_mb": med(x["rss_before"] for x in xs) / MB,
        "rss_loaded_mb": med(x["rss_loaded"] for x in xs) / MB,
        "rss_after_mb": med(x["rss_after"] for x in xs) / MB,
        "back_s": med(x["back_s"] for x in xs),  # over the rounds in which it came back
        "back_rounds": sum(1 for x in xs if x["back_s"] is not None),
        "unload_call_s": med(x["unload_call_s"] for x in xs),
        "load_s": med(x["load_s"] for x in xs),
    }


def eviction_table(summary: dict[str, dict], kind: str, model: Model, n_rounds: int) -> None:
    rows = []
    for side, s in summary.items():
        rows.append([side, s["before_mb"], s["loaded_mb"], s["drop_mb"], s["after_mb"], fmt_share(s["returned"]),
                     s["unload_call_s"], s["back_s"], f"{s['back_rounds']}/{n_rounds}", s["load_s"],
                     f"{s['rss_before_mb']:.0f} → {s['rss_loaded_mb']:.0f} → {s['rss_after_mb']:.0f}"])
    table(f"Eviction of a {kind} model ({model_size_mb(model):.0f} MB of weights): machine's available memory, "
          f"medians over {n_rounds} rounds",
          ["side", "before MB", "loaded MB", "drop MB", "after MB", "returned", "unload call s",
           "back after s", "back in", "load s", "RSS MB before → loaded → after"], rows)


def chart(summary: dict[str, dict], kind: str, plt):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    groups = ["before", "loaded", "after"]
    width = 0.38
    for i, side in enumerate((FLEET, INPROC)):
        xs = [g + (i - 0.5) * width for g in range(len(groups))]
        ax.bar(xs, [summary[side][f"{g}_mb"] / 1024 for g in groups], width, label=side)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    lo = min(summary[s]["loaded_mb"] for s in summary) / 1024
    hi = max(summary[s]["before_mb"] for s in summary) / 1024
    ax.set_ylim(lo - (hi - lo) * 0.5, hi + (hi - lo) * 0.3)
    ax.set_ylabel("available memory (GiB, median)")
    ax.set_title(f"Eviction of a {kind} model")
    ax.legend()
    return fig


def fmt_share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def model_size_mb(model) -> float:
    from pathlib import Path

    path = Path(model.mlx_dir)
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / MB


def tree_rss(processes) -> int:
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def evict_round(side: str, fleet, bench_dir, model, wait: float) -> dict:
    """One load → use → unload cycle. The in-process side gets a fresh warm interpreter each
    round: one that has held the model before keeps its pages and would show no drop at all."""
    messages = story_prompt()
    helper = None
    if side == FLEET:
        wait_settled(fleet)
        rss = lambda: tree_rss(fleet.tree())  # noqa: E731 - serve, supervisor, workers, the spare
    else:
        helper = InProc(bench_dir / f"evict-inproc-{time.time_ns()}.log")
        rss = lambda: tree_rss([psutil.Process(helper.pid)])  # noqa: E731
    try:
        return _evict_round(side, fleet, helper, model, wait, messages, rss)
    finally:
        if helper is not None:
            helper.close()


def _evict_round(side, fleet, inproc, model, wait, messages, rss) -> dict:
    rss_before = rss()
    before = sample_available(1.0)
    started = time.perf_counter()
    if side == FLEET:
        admin(fleet, "POST", "models/load/bench")
        load_s = time.perf_counter() - started
        s = one(fleet.base_url, chat_body("bench", messages, 4))
        assert s.ok, s.error
        wait_settled(fleet)
    else:
        load_s = inproc.call("load", key="evict", path=model.mlx_dir)["load_s"]
        inproc.call("generate", key="evict", messages=messages, max_tokens=4)
    loaded = sample_available(1.0)
    rss_loaded = rss()
    drop = before - loaded
    started = time.perf_counter()
    if side == FLEET:
        reply = admin(fleet, "POST", "models/unload/bench")
        extra = {"memory_released": reply.get("memory_released") or 0, "unload": reply}
    else:
        inproc.call("unload", key="evict")
        extra = {}
    returned_at = time.perf_counter()
    back_s = None
    target = loaded + 0.8 * drop
    while time.perf_counter() - returned_at < wait:
        if available() >= target:
            back_s = time.perf_counter() - returned_at
            break
        time.sleep(0.01)
    after = sample_available(1.0)
    return {"before": before, "loaded": loaded, "after": after, "drop": drop,
            "rss_before": rss_before, "rss_loaded": rss_loaded, "rss_after": rss(),
            "returned": (after - loaded) / drop if drop > 0 else None, "back_s": back_s,
            "unload_call_s": returned_at - started, "load_s": load_s, **extra}
