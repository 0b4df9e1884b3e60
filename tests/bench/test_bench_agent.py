"""An agent's session: a long prefix on every turn, an eviction and a restart in the middle.

Claude Code, Codex and Cline send their whole context on every turn: a system prompt and tool
definitions of several thousand tokens, then the conversation, which grows by a tool call and its
result each turn. The time to the first token is what the user waits for, and it is the prefill of
whatever part of that prefix the server no longer holds.

The session (the same on every side): a system prompt with its tools' definitions, of about
BENCH_AGENT_PREFIX tokens (default 4000), then 8 turns, each adding an assistant tool call and a tool
result of ~300 tokens (written by the benchmark, so every side sees the same prompts; as plain
messages, since the benchmark's models have no tool template); each turn streams 16 tokens.
After turn 4 another model is asked for (one model fits: the session's model is evicted); after turn
6 the server restarts. Sides: mlx-fleet with its disk tier (`[prompt_cache] disk`, the default),
mlx-fleet without it (`disk = "0"`), and `mlx_lm.server` (an in-memory prompt cache only; it swaps
models in its own process and restarts like the others).

    TTFT per turn    send → the first chunk with text
    written          bytes the disk tier's folder grew by during the turn (mlx-fleet with the tier)

Goals (printed with the measured figures): warm turns ≤ 0.25× the cold first turn; the turn after an
eviction or a restart ≤ the model's load time + 0.3× the cold first turn; decode unchanged with the
tier on (`test_bench_overhead` measures decode).

Settings: BENCH_MODEL (default "tiny,smollm2"), BENCH_AGENT_PREFIX (default 4000 tokens, roughly).
Results: bench-results/agent.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from bench_report import med, save, table
from bench_streams import one
from benchlib import FLEET, PEER, Model, env_int, fleet_status, models_setting, start_fleet, start_peer
from fleet_server import ServerProcess

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]
TURNS, EVICT_AFTER, RESTART_AFTER, ANSWER = 8, 4, 6, 16
WITH, WITHOUT = f"{FLEET} + disk", f"{FLEET} memory only"
SIDES = (WITH, WITHOUT, PEER)
TOOLS = [{"name": name, "description": text,
          "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "pattern": {"type": "string"}},
                         "required": ["path"]}}
         for name, text in (("read_file", "Read a file of the repository."), ("grep", "Search the repository."),
                            ("run", "Run a command in the repository's shell and return its output."))]


def system_prompt(repeats: int) -> str:
    rule = ("Follow the repository's conventions, keep changes small, run the tests after each change, "
            "and explain what you did in one short paragraph. ")
    return ("You are a coding agent working in a repository. Call a tool by writing its name and JSON "
            f"arguments. Tools: {json.dumps(TOOLS)}\n" + rule * repeats)


def prompt_tokens(base_url: str, model: str, repeats: int) -> int:
    """The system prompt's size in this model's tokens, as the fleet counts them."""
    r = httpx.post(f"{base_url}/v1/messages/count_tokens", timeout=60, json={
        "model": model, "system": system_prompt(repeats), "messages": [{"role": "user", "content": "x"}]})
    r.raise_for_status()
    return r.json()["input_tokens"]


def repeats_for(base_url: str, model: str, tokens: int) -> int:
    """How many repeats of the rule make a prefix of about `tokens` of this model's tokens."""
    small, large = prompt_tokens(base_url, model, 10), prompt_tokens(base_url, model, 20)
    return max(1, round(10 + (tokens - small) * 10 / max(1, large - small)))


def turn_messages(repeats: int, turn: int) -> list[dict]:
    """The session's prompt at `turn` (1-based): the prefix, the task, and turn - 1 tool round trips."""
    messages = [{"role": "system", "content": system_prompt(repeats)},
                {"role": "user", "content": "Find where the budget is parsed and explain it."}]
    for k in range(1, turn):
        call = json.dumps({"name": "read_file", "arguments": {"path": f"src/module_{k}.py"}})
        result = f"# module {k}\n" + f"def step_{k}(budget):\n    return budget * {k}\n" * 10
        messages += [{"role": "assistant", "content": call}, {"role": "user", "content": f"Tool result:\n{result}"}]
    return messages


def body(model: str, messages: list[dict]) -> dict:
    return {"model": model, "messages": messages, "max_tokens": ANSWER, "temperature": 0.0,
            "stream": True, "stream_options": {"include_usage": True}}


def long_context(model: Model, into: Path, positions: int = 32768) -> Model:
    """A copy of a synthetic model whose config allows `positions` (RoPE has no learned limit)."""
    if not into.exists():
        shutil.copytree(model.mlx_dir, into)
        for name, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
            path = into / name
            if path.exists():
                data = json.loads(path.read_text())
                data[key] = positions
                path.write_text(json.dumps(data))
    return Model(model.kind, str(into), str(into))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


class Side:
    """One server of the comparison: how it starts, what it calls the two models, and its disk tier."""

    def __init__(self, name: str, workdir: Path, state_dir: Path, paths: dict[str, str], dirs: dict[str, str]):
        self.name, self.workdir, self.state_dir = name, workdir, state_dir
        self.names = dirs if name == PEER else {"session": "session", "other": "other"}
        self.paths = paths
        self.cache_dir = state_dir / "prompt-cache"
        self.server: ServerProcess | None = None

    def start(self) -> None:
        if self.name == PEER:
            self.server = start_peer(self.workdir, None, name="agent-peer")
            return
        extra = "" if self.name == WITH else '[prompt_cache]\ndisk = "0"\n'
        self.server = start_fleet(self.workdir, self.paths, state_dir=self.state_dir, memory={"max_models": 1},
                                  extra=extra, name=f"agent-{'disk' if self.name == WITH else 'mem'}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def ask(self, which: str, messages: list[dict]):
        assert self.server is not None
        s = one(self.server.base_url, body(self.names[which], messages))
        assert s.ok, f"{self.name}: {s.error}\n{self.server.log()}"
        return s

    def load_seconds(self) -> float | None:
        if self.name == PEER or self.server is None:
            return None
        loaded = [m["load_seconds"] for m in fleet_status(self.server)["loaded_models"] if m["load_seconds"]]
        return loaded[0] if loaded else None


def run_session(side: Side, repeats: int) -> dict:
    """The 8 turns on one side: TTFT and the disk tier's growth per turn, the model's load time."""
    ttft, written, loads = [], [], []
    side.start()
    try:
        for turn in range(1, TURNS + 1):
            before = folder_bytes(side.cache_dir)
            ttft.append(side.ask("session", turn_messages(repeats, turn)).ttft)
            loads.append(side.load_seconds())
            written.append(folder_bytes(side.cache_dir) - before)
            if turn == EVICT_AFTER:
                side.ask("other", turn_messages(1, 1))
            if turn == RESTART_AFTER:
                side.stop()
                side.start()
    finally:
        side.stop()
    return {"ttft": ttft, "written": written, "load_seconds": med(x for x in loads if x)}


def test_agent_session_through_an_eviction_and_a_restart(bench_dir, state_dir, models, info):
    prefix = env_int("BENCH_AGENT_PREFIX", 4000)
    results: dict[str, dict] = {}
    for kind in models_setting("tiny,smollm2"):
        session, other = models.get(kind, arch="llama", seed=0), models.get("tiny", arch="qwen2", seed=1)
        if kind != "smollm2":  # the synthetic model's 2048 positions are a number in its config: widen them
            session = long_context(session, bench_dir / f"agent-{kind}-model")
        paths = {"session": session.path, "other": other.path}
        dirs = {"session": session.mlx_dir, "other": other.mlx_dir}
        results[kind] = {}
        repeats = None
        for name in SIDES:
            side = Side(name, bench_dir / f"agent-{kind}", state_dir, paths, dirs)
            shutil.rmtree(side.cache_dir, ignore_errors=True)  # the first turn is cold on every side
            if repeats is None:  # sized in the model's own tokens, once, on the first fleet
                side.start()
                repeats = repeats_for(side.server.base_url, "session", prefix)
                side.stop()
            results[kind][name] = run_session(side, repeats)
        report(kind, results[kind])
    save("agent", {"prefix_tokens": prefix, "turns": TURNS, "evict_after": EVICT_AFTER,
                   "restart_after": RESTART_AFTER, "results": results}, info=info)


def report(kind: str, sides: dict[str, dict]) -> None:
    rows = []
    for turn in range(TURNS):
        label = f"turn {turn + 1}" + (" (after eviction)" if turn == EVICT_AFTER else "") + \
            (" (after restart)" if turn == RESTART_AFTER else "")
        rows.append([label, *(sides[s]["ttft"][turn] for s in SIDES), sides[WITH]["written"][turn]])
    table(f"Agent session, {kind}: time to first token per turn (s), and bytes the disk tier wrote",
          ["", *SIDES, "written (B)"], rows)
    for name in SIDES:
        t = sides[name]["ttft"]
        cold, load = t[0], sides[name]["load_seconds"] or 0.0
        warm = [x / cold for i, x in enumerate(t[1:], 1) if i not in (EVICT_AFTER, RESTART_AFTER)]
        print(f"[bench] {kind} {name}: warm turns {max(warm):.2f}× the cold first turn at most (goal ≤ 0.25×); "
              f"after the eviction {t[EVICT_AFTER]:.3f} s, after the restart {t[RESTART_AFTER]:.3f} s "
              f"(goal ≤ load {load:.3f} s + 0.3× cold = {load + 0.3 * cold:.3f} s)")
