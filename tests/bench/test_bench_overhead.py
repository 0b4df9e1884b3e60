"""Stack overhead: one stream through mlx-fleet over HTTP vs `mlx_lm.stream_generate` in-process.

Both sides run the same model directory, the same chat prompt (built the same way: the
tokenizer's chat template, then encode), greedy, the same `max_tokens`. Each round has a new
prompt (a fresh tag opens its system message), so the fleet's prompt cache cannot skip the
prefill that `stream_generate` pays: this measures the stack, not the cache. The in-process
side is a warm interpreter with OpenBLAS loaded before MLX, as in the worker (see `inproc.py`);
the fleet side is a real `mlx-fleet serve` (router → ZeroMQ → supervisor → worker), streamed
over HTTP with `stream_options.include_usage`.

    TTFT     send → the first chunk with text (HTTP), or call → the first token with text
             (in-process; the chat template and tokenization are included on both sides)
    decode   (completion_tokens - 1) / (t_last - t_first): tokens after the first, per second,
             where t_last is the chunk carrying finish_reason (HTTP) or the last token
    total    send → t_last: the whole answer

The router writes one SSE frame per batch of deltas that arrived together, so when the client or
the router falls behind, several tokens arrive in one frame: t_first moves later and the decode
span shrinks, which then reads high. "total" is immune to that: read decode and total together,
and trust total where they disagree.

How to read it: "ratio" is fleet ÷ in-process (decode: 1.00 = no loss, below = slower; TTFT and
total: above 1 = slower), and "+ms" is the first token's extra latency. The tiny model (hidden
64, 2 layers, hundreds of tokens/s) is the worst case: every token's hops (worker → supervisor →
router → SSE) are a large share of its time. SmolLM2 at ~10 tok/s on a CPU shows what a user of
a real model pays. Both sides generate the same tokens; "same text" says whether the outputs
matched exactly.

Beside the chat stream, each round streams the same kind of request through the Responses API
and Anthropic's Messages API (each with a fresh prompt of the same length, so none reuses another's
prompt cache): "responses/chat" and "messages/chat" are those streams' figures over the chat
stream's in the same round (per round, then the median), which is what their event framing costs.

Settings: BENCH_MODEL (default "tiny,smollm2"), BENCH_ROUNDS (default 20 for tiny, 8 otherwise),
BENCH_MAX_TOKENS (default per model, see benchlib). Results: bench-results/overhead.{json,png}.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from bench_report import med, paired_ratio, pct, save, stream_row, table
from bench_streams import API_BODIES, chat_body, one, story_prompt
from benchlib import FLEET, INPROC, InProc, Model, env_int, max_tokens, models_setting, start_fleet, wait_settled
from fleet_server import FleetServer

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]
OTHER_APIS = ("responses", "messages")  # streamed beside the chat stream (FLEET) on the same server


def test_stack_overhead(bench_dir, state_dir, inproc, models, info):
    kinds = models_setting("tiny,smollm2")
    summary: dict[str, dict] = {}
    raw: dict[str, dict] = {}
    for kind in kinds:
        n = max_tokens(kind)
        n_rounds = env_int("BENCH_ROUNDS", 20 if kind == "tiny" else 8)
        samples = measure(kind, models.get(kind), n, n_rounds, bench_dir, state_dir, inproc)
        summary[kind] = summarize(samples, n, n_rounds)
        raw[kind] = samples

    overhead_table(summary)
    framing_table(summary)
    for samples in raw.values():
        for side in samples.values():
            for x in side:
                x.pop("text", None)
    save("overhead", {"summary": summary, "samples": raw}, partial(chart, summary), info=info)


def measure(kind: str, model: Model, n: int, n_rounds: int, bench_dir: Path, state_dir: Path,
            inproc: InProc) -> dict[str, list[dict]]:
    """`n_rounds` rounds on `model`, each side's samples: per round a new prompt, the same for the
    fleet's chat stream and the in-process side, and a fresh one for each other API's stream; the
    sides' order alternates from round to round."""
    samples: dict[str, list[dict]] = {FLEET: [], INPROC: [], **{api: [] for api in OTHER_APIS}}
    fleet = start_fleet(bench_dir / f"overhead-{kind}", {"bench": model.path}, state_dir=state_dir)
    try:
        inproc.call("load", key=kind, path=model.mlx_dir)
        for _ in range(2 if kind == "tiny" else 1):  # warm: the fleet's first request also loads the model
            messages = story_prompt()
            s = one(fleet.base_url, chat_body("bench", messages, n))
            assert s.ok, f"warm-up request failed: {s.error}\n{fleet.log()}"
            inproc.call("generate", key=kind, messages=messages, max_tokens=n)
        wait_settled(fleet)  # the spare that replaces the one the model took has finished importing
        for r in range(n_rounds):
            # The same prompt for both sides; a new one each round (the fleet's prompt cache
            # would otherwise skip the prefill that the in-process side pays).
            messages = story_prompt()
            sides = (FLEET, INPROC, *OTHER_APIS)
            for side in sides if r % 2 == 0 else sides[::-1]:
                samples[side].append(sample(side, r, fleet, inproc, kind, messages, n))
    finally:
        fleet.stop()
        inproc.call("unload", key=kind)
    return samples


def sample(side: str, r: int, fleet: FleetServer, inproc: InProc, kind: str, messages: list[dict], n: int) -> dict:
    """One side's answer to round `r`'s `messages` (another API: to a fresh prompt of the same length)."""
    if side in OTHER_APIS:
        s = one(fleet.base_url, API_BODIES[side]("bench", story_prompt(), n), side)
        assert s.ok, f"round {r} ({side}): {s.error}\n{fleet.log()}"
        return {**stream_row(s), "total": s.t_finish, "text": s.text}
    if side == FLEET:
        s = one(fleet.base_url, chat_body("bench", messages, n))
        assert s.ok, f"round {r}: {s.error}\n{fleet.log()}"
        return {**stream_row(s), "total": s.t_finish, "text": s.text}
    g = inproc.call("generate", key=kind, messages=messages, max_tokens=n)
    span = g["t_last"] - g["t_first"]
    g["decode_tps"] = (g["completion_tokens"] - 1) / span if span > 0 else None
    g["total"] = g["t_last"]
    return g


def summarize(samples: dict[str, list[dict]], n: int, n_rounds: int) -> dict:
    """One model's figures: each side's medians, and fleet ÷ in-process (and each API ÷ chat) per round."""
    f, p = samples[FLEET], samples[INPROC]
    return {
        "max_tokens": n, "rounds": n_rounds,
        "ttft_ms": {FLEET: 1000 * med(x["ttft"] for x in f), INPROC: 1000 * med(x["ttft"] for x in p)},
        "ttft_p95_ms": {FLEET: 1000 * pct((x["ttft"] for x in f), 95),
                        INPROC: 1000 * pct((x["ttft"] for x in p), 95)},
        "decode_tps": {FLEET: med(x["decode_tps"] for x in f), INPROC: med(x["decode_tps"] for x in p)},
        "total_ms": {FLEET: 1000 * med(x["total"] for x in f), INPROC: 1000 * med(x["total"] for x in p)},
        "completion_tokens": {FLEET: med(x["completion_tokens"] for x in f),
                              INPROC: med(x["completion_tokens"] for x in p)},
        "same_text": all(a["text"] == b["text"] for a, b in zip(f, p)),
        # Per round, then the median (see bench_report.paired_ratio): the figures to read.
        "ttft_extra_ms": 1000 * med(a["ttft"] - b["ttft"] for a, b in zip(f, p)),
        "ttft_ratio": paired_ratio([x["ttft"] for x in f], [x["ttft"] for x in p]),
        "decode_ratio": paired_ratio([x["decode_tps"] for x in f], [x["decode_tps"] for x in p]),
        "total_ratio": paired_ratio([x["total"] for x in f], [x["total"] for x in p]),
        "apis": {api: {"ttft_ms": 1000 * med(x["ttft"] for x in samples[api]),
                       "decode_tps": med(x["decode_tps"] for x in samples[api]),
                       "total_ms": 1000 * med(x["total"] for x in samples[api]),
                       "ttft_ratio": paired_ratio([x["ttft"] for x in samples[api]], [x["ttft"] for x in f]),
                       "decode_ratio": paired_ratio([x["decode_tps"] for x in samples[api]],
                                                    [x["decode_tps"] for x in f]),
                       "total_ratio": paired_ratio([x["total"] for x in samples[api]], [x["total"] for x in f])}
                 for api in OTHER_APIS},
    }


def overhead_table(summary: dict[str, dict]) -> None:
    rows = []
    for kind, s in summary.items():
        t, d, e = s["ttft_ms"], s["decode_tps"], s["total_ms"]
        rows.append([kind, s["max_tokens"], s["rounds"], t[FLEET], t[INPROC], s["ttft_extra_ms"], s["ttft_ratio"],
                     d[FLEET], d[INPROC], s["decode_ratio"], e[FLEET], e[INPROC], s["total_ratio"],
                     f"{s['completion_tokens'][FLEET]:.0f}/{s['completion_tokens'][INPROC]:.0f}",
                     "yes" if s["same_text"] else "NO"])
    table("Stack overhead: one stream, medians (+ms and ratios: per round, then the median; "
          "ratio = mlx-fleet / in-process)",
          ["model", "max_tok", "rounds", "TTFT fleet ms", "TTFT in-proc ms", "+ms", "TTFT ratio",
           "decode fleet tok/s", "decode in-proc tok/s", "decode ratio", "total fleet ms", "total in-proc ms",
           "total ratio", "tokens f/i", "same text"], rows)


def framing_table(summary: dict[str, dict]) -> None:
    rows = [[kind, api, s["ttft_ms"][FLEET], a["ttft_ms"], a["ttft_ratio"], s["decode_tps"][FLEET], a["decode_tps"],
             a["decode_ratio"], s["total_ms"][FLEET], a["total_ms"], a["total_ratio"]]
            for kind, s in summary.items() for api, a in s["apis"].items()]
    table("Streamed-event framing: Responses and Anthropic Messages streams vs the chat stream, same server "
          "(ratios: per round, then the median; api / chat)",
          ["model", "api", "TTFT chat ms", "TTFT api ms", "TTFT ratio", "decode chat tok/s", "decode api tok/s",
           "decode ratio", "total chat ms", "total api ms", "total ratio"], rows)


def chart(summary: dict[str, dict], plt):
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    groups = list(summary)
    for ax, key, label in ((a, "ttft_ms", "time to first token (ms)"), (b, "decode_tps", "decode (tok/s)")):
        width = 0.38
        for i, side in enumerate((FLEET, INPROC)):
            xs = [g + (i - 0.5) * width for g in range(len(groups))]
            ax.bar(xs, [summary[k][key][side] or 0 for k in groups], width, label=side)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_title(label)
        ax.set_yscale("log")
        ax.legend()
    fig.suptitle("One stream: mlx-fleet over HTTP vs mlx_lm.stream_generate in-process (medians)")
    return fig
