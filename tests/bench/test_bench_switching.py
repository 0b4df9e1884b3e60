"""Model switching: two models, requests alternating between them, room for only one at a time.

mlx-fleet side: a fleet configured with models "a" (random llama) and "b" (random qwen2) and
`[memory] max_models = 1`, so every request for the other model evicts the idle one (its worker
process ends) and loads the requested one (in a warm spare if the fleet has one ready, else in a
new worker). Two fleets run: `spares = 1` (the default) and `spares = 2` (back-to-back switches
use up one spare each, and the pool refills in the background). Peer side: `mlx_lm.server` started without a model, asked for the two model
directories by path in turn: it drains its batch, drops the model, `gc`, `mx.clear_cache()`, and
loads the other in the same process (its ModelProvider keeps exactly one model).

Each round sends, one at a time: 8 requests alternating a, b, a, ... back to back (every one a
switch); then 4 more switches, each after a pause of BENCH_SWITCH_PAUSE seconds (default 3);
then 4 requests for the model used last (no switch: the baseline). Streamed, greedy,
max_tokens 8 (BENCH_MAX_TOKENS), a new prompt each time. Sides alternate which goes first.

    latency     send → data: [DONE], per request; p50 and p95 over all rounds
    TTFT        send → first chunk with text
    paced       switches after a pause: the fleet's warm spare (a worker process with mlx-lm
                imported, which becomes the next model's worker) has had time to start again,
                which back-to-back switches do not give it
    no-switch   the baseline: switch cost ≈ switch p50 − no-switch p50

How to read it: "ratio" is fleet (spares = 1) ÷ peer, "ratio 2" the same for spares = 2 (above 1: switching costs more on the fleet). With the
tiny models (BENCH_SWITCH_MODEL=tiny, default) loading is instant, so the numbers show the cost of
ending one worker and readying another against swapping in-process; "small" (~300 MB each)
and "medium" (~1 GB) add weight loading to both.

Settings: BENCH_SWITCH_MODEL (tiny | small | medium | big; default tiny), BENCH_ROUNDS (default 3),
BENCH_MAX_TOKENS (default 8), BENCH_SWITCH_PAUSE (default 3). Results: bench-results/switching.{json,png}.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import pytest

from bench_report import med, pct, ratio, save, stream_row, table
from bench_streams import Stream, chat_body, one, story_prompt
from benchlib import FLEET, PEER, env_float, env_int, fleet_status, models_setting, rounds, start_fleet, start_peer
from fleet_server import ServerProcess

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]

FLEET2 = f"{FLEET} spares=2"

SWITCHES = 8
PACED = 4
STEADY = 4


def test_model_switching(bench_dir, state_dir, models, info):
    kind = models_setting("tiny", var="BENCH_SWITCH_MODEL", allowed=("tiny", "small", "medium", "big"))[0]
    a, b = models.get(kind, arch="llama", seed=0), models.get(kind, arch="qwen2", seed=1)
    n = env_int("BENCH_MAX_TOKENS", 8)
    n_rounds = rounds(3)
    pause = env_float("BENCH_SWITCH_PAUSE", 3.0)
    fleet = start_fleet(bench_dir / f"switch-{kind}", {"a": a.path, "b": b.path}, state_dir=state_dir,
                        memory={"max_models": 1, "spares": 1})
    fleet2 = peer = None
    sides = (FLEET, FLEET2, PEER)
    samples: dict[str, dict[str, list]] = {side: {"switch": [], "paced": [], "steady": []} for side in sides}
    loaded_counts: list[int] = []
    load_seconds: list[float] = []
    try:
        fleet2 = start_fleet(bench_dir / f"switch-{kind}", {"a": a.path, "b": b.path}, state_dir=state_dir,
                             memory={"max_models": 1, "spares": 2}, name="fleet2")
        peer = start_peer(bench_dir / f"switch-{kind}", None)
        fleet_names = {"a": "a", "b": "b"}
        names = {FLEET: fleet_names, FLEET2: fleet_names, PEER: {"a": a.mlx_dir, "b": b.mlx_dir}}
        servers = Servers({FLEET: fleet, FLEET2: fleet2, PEER: peer}, names, n)
        for side in sides:  # warm: both models once, on every server
            for which in ("a", "b"):
                servers.request(side, which)
        for r in range(n_rounds):
            for side in sides[r % 3:] + sides[:r % 3]:  # each side goes first in turn
                take_turn(servers, side, samples[side], pause, loaded_counts, load_seconds)
    finally:
        for server in (fleet, fleet2, peer):
            if server is not None:
                server.stop()

    summary = {side: summarize(d) for side, d in samples.items()}
    switching_table(summary, kind, n_rounds, n, pause)
    load_p50 = med(load_seconds) or 0.0
    print(f"[bench] models loaded in the fleets after each switch: max {max(loaded_counts)}; "
          f"a model's load (in its worker) p50 {load_p50:.3f} s: the target for spares=2's switch p50 "
          f"is at most that + 0.1 s = {load_p50 + 0.1:.3f} s (measured {summary[FLEET2]['switch_p50']:.3f} s)")
    save("switching", {"model": kind, "max_tokens": n, "rounds": n_rounds, "pause_s": pause, "summary": summary,
                       "fleet_loaded_after_each_switch": loaded_counts, "load_seconds_p50": med(load_seconds),
                       "samples": {side: {k: [stream_row(s) for s in v] for k, v in d.items()}
                                   for side, d in samples.items()}}, partial(chart, summary, sides, kind), info=info)


@dataclass
class Servers:
    """The servers by side, what each calls models a and b, and the answers' length."""

    by_side: dict[str, ServerProcess]
    names: dict[str, dict[str, str]]
    n: int

    def request(self, side: str, which: str) -> Stream:
        server = self.by_side[side]
        s = one(server.base_url, chat_body(self.names[side][which], story_prompt(), self.n))
        assert s.ok, f"{side} request for {which} failed: {s.error}\n{server.log()}"
        return s


def take_turn(servers: Servers, side: str, samples: dict[str, list], pause: float, loaded_counts: list[int],
              load_seconds: list[float]) -> None:
    """One side's turn in a round: back-to-back switches (after each, a fleet's models loaded and their
    load times), switches `pause` apart, then requests that stay on one model."""
    for i in range(SWITCHES):  # the last warm-up and every round end on b: a switches
        samples["switch"].append(servers.request(side, "ab"[i % 2]))
        if side in (FLEET, FLEET2):
            status = fleet_status(servers.by_side[side])
            loaded_counts.append(status["pool"]["loaded"])
            load_seconds += [m["load_seconds"] for m in status["loaded_models"] if m["load_seconds"]]
    for i in range(PACED):
        time.sleep(pause)
        samples["paced"].append(servers.request(side, "ab"[i % 2]))
    for _ in range(STEADY):
        samples["steady"].append(servers.request(side, "b"))


def lat(xs: list[Stream]) -> list[float | None]:
    return [s.t_end for s in xs]


def summarize(d: dict[str, list[Stream]]) -> dict[str, float | None]:
    """One side's latencies: switching back to back, paced, and staying on one model."""
    summary = {
        "switch_p50": med(lat(d["switch"])), "switch_p95": pct(lat(d["switch"]), 95),
        "switch_ttft_p50": med(s.ttft for s in d["switch"]),
        "paced_p50": med(lat(d["paced"])), "paced_p95": pct(lat(d["paced"]), 95),
        "steady_p50": med(lat(d["steady"])), "steady_p95": pct(lat(d["steady"]), 95),
    }
    summary["switch_cost"] = summary["switch_p50"] - summary["steady_p50"]
    return summary


def switching_table(summary: dict[str, dict], kind: str, n_rounds: int, n: int, pause: float) -> None:
    f, f2, p = summary[FLEET], summary[FLEET2], summary[PEER]
    rows = [[label, f[key], f2[key], p[key], ratio(f[key], p[key]), ratio(f2[key], p[key])] for label, key in (
        ("switch latency p50 s", "switch_p50"), ("switch latency p95 s", "switch_p95"),
        ("switch TTFT p50 s", "switch_ttft_p50"), (f"paced switch ({pause:g} s apart) p50 s", "paced_p50"),
        (f"paced switch ({pause:g} s apart) p95 s", "paced_p95"), ("no-switch latency p50 s", "steady_p50"),
        ("no-switch latency p95 s", "steady_p95"), ("switch cost (p50 diff) s", "switch_cost"))]
    table(f"Model switching, {kind} models a/b alternating, max_models = 1 ({n_rounds} rounds × {SWITCHES} "
          f"back-to-back + {PACED} paced switches, {n} tokens; ratio = fleet / peer)",
          ["", "mlx-fleet spares=1", "mlx-fleet spares=2", "mlx_lm.server", "ratio", "ratio 2"], rows)


def chart(summary: dict[str, dict], sides: tuple[str, ...], kind: str, plt):
    fig, ax = plt.subplots(figsize=(9, 3.8))
    groups = ["switch p50", "switch p95", "paced p50", "paced p95", "no-switch p50", "no-switch p95"]
    keys = ["switch_p50", "switch_p95", "paced_p50", "paced_p95", "steady_p50", "steady_p95"]
    width = 0.27
    for i, side in enumerate(sides):
        xs = [g + (i - 1) * width for g in range(len(groups))]
        ax.bar(xs, [summary[side][k] for k in keys], width, label=side)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_yscale("log")
    ax.set_ylabel("request latency (s)")
    ax.set_title(f"Switching between two {kind} models (max_models = 1)")
    ax.legend()
    return fig
