"""Concurrent streams: mlx-fleet vs `mlx_lm.server` on the same model, and a burst of connections.

Both servers run at once on the same model directory, with the same continuous-batching sizes
(`mlx_lm.server --decode-concurrency/--prompt-concurrency/--prefill-step-size` set to the fleet
worker's `completion_batch_size` / `prefill_batch_size` / `prefill_step_size`, read from
`worker/engines/text.py`: 32 / 8 / 2048 today, which are also mlx_lm.server's defaults), greedy,
the same `max_tokens`. The peer runs through `peer_server.py`: listen backlog raised from 5 to 256
(otherwise bursts fail on the peer for a reason that is one line to fix) and OpenBLAS loaded as
in the fleet's worker. The table prints each listening socket's backlog as the kernel reports it.

A wave is N streams sent at once, each on its own new connection; every prompt is new (a fresh
tag opens its system message) so neither server's prompt cache skips prefill
(BENCH_SAME_PROMPT=1 sends one identical prompt instead, to see the caches at work). Each width
is warmed with one untimed wave per server, then timed for BENCH_ROUNDS waves per server,
alternating which server goes first.

    agg tok/s   the wave's completion tokens (from each stream's usage chunk) ÷ (first send →
                last [DONE]); median over rounds
    TTFT p50/95 send → first chunk with text, over every stream of every timed wave (queueing
                included: at 16 streams it is mostly waiting for a prefill slot)
    ok/failed   streams that ended with data: [DONE] and usage / the rest (connection reset,
                non-200, or a stream cut short); failures are listed by reason

The burst (BENCH_BURST streams at once, default 64, 0 = none; also 256 with BENCH_BURST_256=1)
is the same measurement at a width above the batch size (32): streams beyond it wait for a slot,
and the server must accept all the connections at once. "ratio" is fleet ÷ peer (above 1: the fleet
is faster), taken per round (the two servers' waves of a round ran back to back), then the median.

Settings: BENCH_MODEL (default tiny; smollm2 works but is slow on a CPU), BENCH_WIDTHS
(default 1,4,8,16), BENCH_ROUNDS (default 10), BENCH_MAX_TOKENS (default 64 for tiny, else per
model), BENCH_BURST, BENCH_BURST_256, BENCH_SAME_PROMPT. Results: bench-results/concurrency.{json,png}.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from functools import partial

import pytest

from bench_report import med, paired_ratio, pct, save, stream_row, table
from bench_streams import chat_body, story_prompt, wave
from benchlib import (
    FLEET,
    PEER,
    env_flag,
    env_int,
    fleet_batch_settings,
    listen_backlog,
    max_tokens,
    models_setting,
    rounds,
    start_fleet,
    start_peer,
    wait_settled,
)
from fleet_server import ServerProcess

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]


def test_concurrent_streams_vs_mlx_lm_server(bench_dir, state_dir, models, info):
    kind = models_setting("tiny")[0]
    model = models.get(kind)
    n = max_tokens(kind, 64 if kind == "tiny" else None)
    widths = [int(w) for w in os.environ.get("BENCH_WIDTHS", "1,4,8,16").split(",") if w.strip()]
    bursts = [b for b in (env_int("BENCH_BURST", 64), 256 if env_flag("BENCH_BURST_256") else 0) if b > 0]
    n_rounds = rounds(10)
    same = env_flag("BENCH_SAME_PROMPT")
    same_messages = story_prompt()

    def bodies(side_model: str, width: int) -> list[dict]:
        return [chat_body(side_model, same_messages if same else story_prompt(), n) for _ in range(width)]

    fleet = start_fleet(bench_dir / f"concurrency-{kind}", {"bench": model.path}, state_dir=state_dir)
    peer = None
    try:
        peer = start_peer(bench_dir / f"concurrency-{kind}", model.mlx_dir)
        servers = {FLEET: (fleet, "bench"), PEER: (peer, "default_model")}
        backlogs = {side: listen_backlog(srv.port) for side, (srv, _) in servers.items()}
        results = {width: measure_width(servers, width, bodies, n_rounds) for width in [*widths, *bursts]}
    finally:
        fleet.stop()
        if peer is not None:
            peer.stop()

    ratios = throughput_table(results, bursts, kind, n, n_rounds, backlogs)
    for width, r in results.items():
        for side, s in r.items():
            if s["failures"]:
                print(f"[bench] {side} at {width} streams: failures {s['failures']}")
    save("concurrency", {
        "model": kind, "max_tokens": n, "rounds": n_rounds, "same_prompt": same, "widths": widths, "bursts": bursts,
        "listen_backlog": backlogs, "batch_settings": fleet_batch_settings(),
        "results": {str(w): r for w, r in results.items()}, "ratios": {str(w): r for w, r in ratios.items()},
    }, partial(chart, results, kind, n), info=info)


def measure_width(servers: dict[str, tuple[ServerProcess, str]], width: int,
                  bodies: Callable[[str, int], list[dict]], n_rounds: int) -> dict[str, dict]:
    """Each server's figures at `width` streams: a warm-up wave each, then `n_rounds` timed waves
    each, alternating which server goes first."""
    fleet = servers[FLEET][0]
    per_side = {side: {"waves": [], "warm": None} for side in servers}
    for side, (srv, name) in servers.items():  # warm this width (and, first, load the model)
        w = wave(srv.base_url, bodies(name, width))
        per_side[side]["warm"] = {"tok_s": w.tok_s, "ok": len(w.ok), "failed": len(w.failed)}
    wait_settled(fleet)  # after the first wave's load, a new spare imports: not while timing
    for r in range(n_rounds):
        for side in (FLEET, PEER) if r % 2 == 0 else (PEER, FLEET):
            srv, name = servers[side]
            w = wave(srv.base_url, bodies(name, width))
            per_side[side]["waves"].append(w)
    result = {side: summarize(d["waves"], d["warm"]) for side, d in per_side.items()}
    f, p = result[FLEET], result[PEER]
    print(f"[bench] width {width}: fleet {f['tok_s']:.1f} tok/s ({f['failed']} failed), "
          f"peer {p['tok_s']:.1f} tok/s ({p['failed']} failed)")
    return result


def throughput_table(results: dict[int, dict[str, dict]], bursts: list[int], kind: str, n: int, n_rounds: int,
                     backlogs: dict[str, int | None]) -> dict[int, float | None]:
    """Prints the table; returns fleet ÷ peer aggregate tok/s by width (per round, then the median)."""
    rows = []
    ratios: dict[int, float | None] = {}
    for width, r in results.items():
        f, p = r[FLEET], r[PEER]
        ratios[width] = paired_ratio(f["tok_s_rounds"], p["tok_s_rounds"])
        rows.append([("burst " if width in bursts else "") + str(width), f["tok_s"], p["tok_s"], ratios[width],
                     1000 * f["ttft_p50"], 1000 * p["ttft_p50"], 1000 * f["ttft_p95"], 1000 * p["ttft_p95"],
                     f"{f['ok']}/{f['failed']}", f"{p['ok']}/{p['failed']}"])
    table(f"Concurrent streams on {kind}, {n} tokens each, {n_rounds} timed waves per server "
          f"(listen backlog: fleet {backlogs[FLEET]}, peer {backlogs[PEER]}; ratio = fleet / peer)",
          ["streams", "fleet tok/s", "peer tok/s", "ratio", "fleet TTFT p50 ms", "peer TTFT p50 ms",
           "fleet TTFT p95 ms", "peer TTFT p95 ms", "fleet ok/failed", "peer ok/failed"], rows)
    return ratios


def chart(results: dict[int, dict[str, dict]], kind: str, n: int, plt):
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    xs = list(results)
    for i, side in enumerate((FLEET, PEER)):
        color = f"C{i}"
        a.plot(xs, [results[x][side]["tok_s"] for x in xs], marker="o", color=color, label=side)
        b.plot(xs, [1000 * (results[x][side]["ttft_p50"] or 0) for x in xs], marker="o", color=color,
               label=f"{side} p50")
        b.plot(xs, [1000 * (results[x][side]["ttft_p95"] or 0) for x in xs], marker="x", linestyle="--",
               color=color, label=f"{side} p95")
    for ax, title in ((a, "aggregate tok/s (median wave)"), (b, "time to first token (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel("concurrent streams")
        ax.set_title(title)
        ax.legend()
    b.set_yscale("log")
    fig.suptitle(f"mlx-fleet vs mlx_lm.server ({kind}, {n} tokens per stream)")
    return fig


def summarize(waves, warm) -> dict:
    streams = [s for w in waves for s in w.streams]
    return {
        "tok_s": med(w.tok_s for w in waves),
        "tok_s_rounds": [w.tok_s for w in waves],
        "ttft_p50": pct((s.ttft for s in streams if s.ok), 50),
        "ttft_p95": pct((s.ttft for s in streams if s.ok), 95),
        "ok": sum(len(w.ok) for w in waves),
        "failed": sum(len(w.failed) for w in waves),
        "failures": dict(Counter((s.error or "")[:80] for s in streams if not s.ok)),
        "warm": warm,
        "streams": [[stream_row(s) for s in w.streams] for w in waves],
    }
