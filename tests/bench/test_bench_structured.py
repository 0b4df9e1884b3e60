"""Constrained decoding's cost: decode speed of streams with a JSON schema vs the same streams
without one, on the same fleet and model (goal: >= 0.9x unconstrained).

The schema keeps the model writing until max_tokens (an array of integers that must hold more
items than the budget allows), so both sides decode the same number of tokens; its grammar is
llguidance's, applied per sequence (see worker/generation/constrain.py). Widths 1 (the lone-request loop)
and 8 (the batch). Waves alternate which side goes first each round.

    agg tok/s     a wave's completion tokens ÷ (first send → last [DONE]); median over rounds
    ratio         schema ÷ free, per round, then the median

Two models by default: the tiny one, where a decode step costs about a millisecond and any
per-token cost of the grammar shows (the worst case), and SmolLM2-135M, a real model, where a
step costs tens of milliseconds on a CPU (the figure a user sees).

Settings: BENCH_MODEL (default tiny,smollm2), BENCH_ROUNDS (default 5 for tiny, 2 otherwise),
BENCH_MAX_TOKENS (default 64 for tiny, 32 for smollm2). Results: bench-results/structured.json.
"""

from __future__ import annotations

import pytest

from bench_report import med, paired_ratio, save, table
from bench_streams import chat_body, story_prompt, wave
from benchlib import max_tokens, models_setting, rounds, start_fleet, wait_settled

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

LONG_JSON = {"type": "json_schema", "json_schema": {"name": "numbers", "schema": {
    "type": "object", "required": ["numbers"], "additionalProperties": False,
    "properties": {"numbers": {"type": "array", "minItems": 10000, "items": {"type": "integer"}}}}}}


def test_json_schema_decode_speed_vs_free(bench_dir, state_dir, models, info):
    rows, payload = [], {}
    for kind in models_setting("tiny,smollm2"):
        n = max_tokens(kind, 64 if kind == "tiny" else None)
        n_rounds = rounds(5 if kind == "tiny" else 2)
        results = _measure(bench_dir / f"structured-{kind}", state_dir, models.get(kind).path, n, n_rounds)
        payload[kind] = {"max_tokens": n, "rounds": n_rounds, "widths": {}}
        for width, waves in results.items():
            agg = {side: [w.tok_s for w in ws] for side, ws in waves.items()}
            failed = {side: sum(len(w.failed) for w in ws) for side, ws in waves.items()}
            ratio = paired_ratio(agg["schema"], agg["free"])
            rows.append([kind, n, n_rounds, width, med(agg["free"]), med(agg["schema"]), ratio,
                         f"{failed['free']}/{failed['schema']}"])
            payload[kind]["widths"][width] = {"agg_tok_s": agg, "failed": failed, "ratio": ratio}
    table("JSON schema vs free decoding (ratio = schema / free)",
          ["model", "tokens", "rounds", "streams", "free agg tok/s", "schema agg tok/s", "ratio", "failed free/schema"],
          rows)
    save("structured", {"models": payload}, info=info)
    assert all(not any(w["failed"].values()) for m in payload.values() for w in m["widths"].values())


def _measure(fleet_dir, state_dir, model_path: str, n: int, n_rounds: int) -> dict[int, dict[str, list]]:
    """Waves of `width` streams, free and constrained alternating which goes first, per width."""

    def bodies(width: int, constrained: bool) -> list[dict]:
        out = [chat_body("bench", story_prompt(), n) for _ in range(width)]
        for body in out:
            if constrained:
                body["response_format"] = LONG_JSON
        return out

    fleet = start_fleet(fleet_dir, {"bench": model_path}, state_dir=state_dir)
    results: dict[int, dict[str, list]] = {}
    try:
        for width in (1, 8):
            waves = {"free": [], "schema": []}
            for side in waves:  # warm: load the model, build llguidance's view of the vocabulary
                wave(fleet.base_url, bodies(width, side == "schema"))
            wait_settled(fleet)
            for r in range(n_rounds):
                for side in ("free", "schema") if r % 2 == 0 else ("schema", "free"):
                    waves[side].append(wave(fleet.base_url, bodies(width, side == "schema")))
            results[width] = waves
    finally:
        fleet.stop()
    return results
