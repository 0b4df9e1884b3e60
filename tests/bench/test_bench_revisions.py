"""This checkout against another, in one run: the token path and model switching, before and after.

A change that "does not touch the token path" still has to show it: machines drift by several
per cent between runs, so figures from two runs cannot tell a 3 % change from noise. This
benchmark starts the same fleets from two interpreters, this checkout's and BENCH_BASELINE_PYTHON
(a Python whose `mlx_fleet.cli` is the other checkout, e.g. a `git worktree` of main with its own
venv), and alternates them round by round, so that both sides share the machine's state.

    token path   one stream on the tiny model (hidden 64, 2 layers: the hops are most of its time),
                 a fresh prompt each round, the same on both sides: TTFT, decode tok/s, total
    switching    two tiny models a/b with max_models = 1 and one spare: every request evicts the
                 other model's worker and loads its own (back to back), then requests with no switch

How to read it: "ratio" is this checkout ÷ the baseline, per round and then the median (TTFT, total,
latency: above 1 = slower; decode: below 1 = slower).

Settings: BENCH_BASELINE_PYTHON (required; the benchmark is skipped without it), BENCH_ROUNDS
(default 20 for the token path; the switching rounds are a quarter of it), BENCH_MAX_TOKENS
(default per model, see benchlib). Results: bench-results/revisions.json.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench_report import med, paired_ratio, save, table
from bench_streams import chat_body, one, story_prompt
from benchlib import env_int, max_tokens, start_fleet, wait_settled

pytestmark = [pytest.mark.bench, pytest.mark.timeout(1800)]
THIS, BASE = "this checkout", "baseline"
SWITCHES, STEADY = 6, 3


def baseline_python() -> str:
    python = os.environ.get("BENCH_BASELINE_PYTHON", "")
    if not python:
        pytest.skip("set BENCH_BASELINE_PYTHON to the Python of the checkout to compare with")
    if not Path(python).exists():
        pytest.fail(f"BENCH_BASELINE_PYTHON={python}: no such file")
    return python


def _stream(server, model: str, messages: list[dict], n: int):
    s = one(server.base_url, chat_body(model, messages, n))
    assert s.ok, f"{server.name}: {s.error}\n{server.log()}"
    return s


def test_token_path_and_switching_against_a_baseline(bench_dir, state_dir, models, info):
    base_python = baseline_python()
    tiny, other = models.get("tiny", arch="llama", seed=0), models.get("tiny", arch="qwen2", seed=1)
    n, n_rounds = max_tokens("tiny"), env_int("BENCH_ROUNDS", 20)
    pythons = {THIS: None, BASE: base_python}
    token: dict[str, list] = {side: [] for side in pythons}
    switch: dict[str, dict[str, list]] = {side: {"switch": [], "steady": []} for side in pythons}
    servers: dict[str, object] = {}
    try:
        for side, python in pythons.items():
            servers[side] = start_fleet(bench_dir / "revisions", {"bench": tiny.path}, state_dir=state_dir,
                                        name=f"token-{side[:4]}", python=python)
            for _ in range(2):  # warm: the first request also loads the model
                _stream(servers[side], "bench", story_prompt(), n)
            wait_settled(servers[side])
        for r in range(n_rounds):
            messages = story_prompt()
            for side in (THIS, BASE) if r % 2 == 0 else (BASE, THIS):
                token[side].append(_stream(servers[side], "bench", messages, n))
        for side in pythons:
            servers.pop(side).stop()
        for side, python in pythons.items():
            servers[side] = start_fleet(bench_dir / "revisions", {"a": tiny.path, "b": other.path},
                                        state_dir=state_dir, memory={"max_models": 1, "spares": 1},
                                        name=f"switch-{side[:4]}", python=python)
            for which in ("a", "b"):
                _stream(servers[side], which, story_prompt(), 8)
        for r in range(max(2, n_rounds // 4)):
            for side in (THIS, BASE) if r % 2 == 0 else (BASE, THIS):
                for i in range(SWITCHES):
                    switch[side]["switch"].append(_stream(servers[side], "ab"[i % 2], story_prompt(), 8))
                for _ in range(STEADY):
                    switch[side]["steady"].append(_stream(servers[side], "b", story_prompt(), 8))
    finally:
        for server in servers.values():
            server.stop()

    def figures(key: str, streams: dict[str, list]) -> list:
        this, base = [getattr(s, key) for s in streams[THIS]], [getattr(s, key) for s in streams[BASE]]
        return [med(this), med(base), paired_ratio(this, base)]

    rows = [["token path: TTFT s", *figures("ttft", token)],
            ["token path: decode tok/s", *figures("decode_tps", token)],
            ["token path: total s", *figures("t_finish", token)],
            ["switch: latency s", *figures("t_end", {k: v["switch"] for k, v in switch.items()})],
            ["no switch: latency s", *figures("t_end", {k: v["steady"] for k, v in switch.items()})]]
    table(f"This checkout vs the baseline ({base_python}), medians; ratio = this / baseline, per round then "
          f"the median ({n_rounds} token-path rounds of {n} tokens, tiny model)",
          ["", THIS, BASE, "ratio"], rows)
    save("revisions", {"baseline_python": base_python, "rounds": n_rounds, "max_tokens": n,
                       "rows": {row[0]: row[1:] for row in rows}}, info=info)
