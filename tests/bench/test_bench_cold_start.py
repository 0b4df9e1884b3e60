"""Cold start: a request for a model that is not loaded, until its first token.

mlx-fleet side: a running `mlx-fleet serve` whose model is configured but not loaded. One streamed
request (max_tokens 1) is timed from send to the first chunk with text: the supervisor starts
(or assigns its warm spare) a worker process, which imports mlx-lm if it is not a spare, loads the
weights, prefills, and sends the token back through ZeroMQ and the router. Then the model is
unloaded with `POST /admin/models/unload/{id}` and, before the next round, the fleet is left to
settle (its warm spare, if it keeps one, ready again), so each round starts from the same state.

In-process side: `mlx_lm.load` + chat template + first token of `stream_generate`, timed as one
step in a warm interpreter that has mlx-lm imported already (`inproc.py`), then the model is
dropped. That is the floor: what a single-process server that swaps models pays.

How to read it: "ratio" is fleet ÷ in-process and "+s" what the process boundary costs on top of
the load itself. "worker load" is the worker's own load time as the fleet's status reports it
(assignment or spawn → ready), which separates the worker's work from the supervisor's and the
router's. "spare" counts the rounds in which a warm spare was ready when the request was sent.

Settings: BENCH_MODEL (default tiny; smollm2/small/medium/big show weight loading), BENCH_ROUNDS
(default 5). Results: bench-results/cold_start.{json,png}.
"""

from __future__ import annotations

import pytest

from bench_report import med, pct, ratio, save, stream_row, table
from bench_streams import chat_body, one, story_prompt
from benchlib import FLEET, INPROC, admin, models_setting, rounds, start_fleet, wait_settled

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]


def test_cold_start(bench_dir, state_dir, inproc, models, info):
    kinds = models_setting("tiny")
    summary, raw = {}, {}
    for kind in kinds:
        model = models.get(kind)
        n_rounds = rounds(5)
        samples: dict[str, list[dict]] = {FLEET: [], INPROC: []}
        fleet = start_fleet(bench_dir / f"cold-{kind}", {"bench": model.path}, state_dir=state_dir)
        try:
            # Untimed: the first load of this model in this machine's page cache, on both sides.
            for side in (FLEET, INPROC):
                cold_round(side, fleet, inproc, model)
            for r in range(n_rounds):
                for side in (FLEET, INPROC) if r % 2 == 0 else (INPROC, FLEET):
                    samples[side].append(cold_round(side, fleet, inproc, model))
        finally:
            fleet.stop()
        f, p = samples[FLEET], samples[INPROC]
        summary[kind] = {
            "rounds": n_rounds,
            "first_token_s": {FLEET: med(x["first_token_s"] for x in f), INPROC: med(x["first_token_s"] for x in p)},
            "first_token_p95_s": {FLEET: pct((x["first_token_s"] for x in f), 95),
                                  INPROC: pct((x["first_token_s"] for x in p), 95)},
            "load_s": {FLEET: med(x["load_s"] for x in f), INPROC: med(x["load_s"] for x in p)},
            "spare_ready_rounds": sum(1 for x in f if x["spare_ready"]),
        }
        raw[kind] = samples

    rows = []
    for kind, s in summary.items():
        t, ld = s["first_token_s"], s["load_s"]
        s["ratio"] = ratio(t[FLEET], t[INPROC])
        rows.append([kind, s["rounds"], t[FLEET], t[INPROC], t[FLEET] - t[INPROC], s["ratio"], ld[FLEET], ld[INPROC],
                     f"{s['spare_ready_rounds']}/{s['rounds']}"])
    table("Cold start: request for an unloaded model → first token, medians (ratio = fleet / in-process)",
          ["model", "rounds", "fleet s", "in-proc load+1st s", "+s", "ratio", "fleet worker load s",
           "in-proc load s", "spare"], rows)

    def chart(plt):
        fig, ax = plt.subplots(figsize=(6, 3.8))
        groups = list(summary)
        width = 0.38
        for i, side in enumerate((FLEET, INPROC)):
            xs = [g + (i - 0.5) * width for g in range(len(groups))]
            ax.bar(xs, [summary[k]["first_token_s"][side] for k in groups], width,
                   label=f"{side}: " + ("request → first token" if side == FLEET else "load + first token"))
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels(groups)
        ax.set_ylabel("seconds (median)")
        ax.set_title("Cold start")
        ax.legend()
        return fig

    save("cold_start", {"summary": summary, "samples": raw}, chart, info=info)


def cold_round(side: str, fleet, inproc, model) -> dict:
    messages = story_prompt()
    if side == INPROC:
        g = inproc.call("cold", path=model.mlx_dir, messages=messages, max_tokens=1)
        return {"first_token_s": g["ttft"], "load_s": g["load_s"], "completion_tokens": g["completion_tokens"]}
    status = wait_settled(fleet)
    spare = status["pool"].get("spare")
    s = one(fleet.base_url, chat_body("bench", messages, 1))
    assert s.ok, f"cold request failed: {s.error}\n{fleet.log()}"
    status = admin(fleet, "GET", "models/status")
    load_s = next(m["load_seconds"] for m in status["models"] if m["id"] == "bench")
    unloaded = admin(fleet, "POST", "models/unload/bench")
    # With max_tokens 1 the one token may carry no text (a partial character): then its end counts.
    first = s.ttft if s.ttft is not None else s.t_finish
    return {"first_token_s": first, "load_s": load_s, "spare_ready": bool(spare and spare.get("state") == "ready"),
            "unload": unloaded, "stream": stream_row(s)}
