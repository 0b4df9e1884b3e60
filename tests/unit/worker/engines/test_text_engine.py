"""The text engine in-process: one request alone on generate_step, several in the batch, and the
move from one to the other in the middle of a generation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_sink import Sink
from mlx_fleet.protocol import ChatInput, Done, Generate, Kind, Message, Sampling, Started, decode_delta


@pytest.fixture(scope="module")
def engine_factory(tiny_lm: Path):
    from mlx_lm import load

    from mlx_fleet.worker.engines.text import TextEngine

    model, tokenizer = load(str(tiny_lm))
    return lambda: TextEngine(model, tokenizer, 2048)


def request(text: str, max_tokens: int, **sampling) -> Generate:
    return Generate(ChatInput((Message("user", text),)), Sampling(max_tokens=max_tokens, temperature=0.0, **sampling))


def run_alone(make, text: str, max_tokens: int, **sampling) -> tuple[str, Done]:
    engine, sink = make(), Sink()
    engine.submit(b"x", request(text, max_tokens, **sampling))
    while engine.active:
        engine.step(sink)
    return sink.text.get(b"x", ""), sink.ends[b"x"]


@pytest.mark.parametrize("steps_before_join", [0, 1, 7])
def test_a_request_moved_into_the_batch_mid_generation_is_unchanged(engine_factory, steps_before_join: int) -> None:
    expected_a = run_alone(engine_factory, "first question, about rivers", 30)
    expected_b = run_alone(engine_factory, "second question, about mountains", 20)
    engine, sink = engine_factory(), Sink()
    engine.submit(b"a", request("first question, about rivers", 30))
    assert engine._solo is not None  # alone: mlx-lm's single-sequence loop
    for _ in range(steps_before_join):
        engine.step(sink)
    engine.submit(b"b", request("second question, about mountains", 20))
    assert engine._solo is None and len(engine._by_uid) == 2  # both in the batch now
    while engine.active:
        engine.step(sink)
    assert (sink.text[b"a"], sink.ends[b"a"].usage.completion_tokens) == (expected_a[0], 30)
    assert (sink.text[b"b"], sink.ends[b"b"].usage.completion_tokens) == (expected_b[0], 20)
    assert sink.ends[b"a"].finish_reason == sink.ends[b"b"].finish_reason == "length"


def test_alone_matches_mlx_lm_stream_generate(engine_factory, tiny_lm: Path) -> None:
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = load(str(tiny_lm))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello there"}], add_generation_prompt=True,
                                           tokenize=False)
    expected = "".join(r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=25,
                                                       sampler=make_sampler(temp=0.0)))
    text, done = run_alone(engine_factory, "hello there", 25)
    assert text == expected and done.usage.completion_tokens == 25


def test_stop_string_and_cancel_while_alone(engine_factory) -> None:
    full, _ = run_alone(engine_factory, "tell me something", 30)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    text, done = run_alone(engine_factory, "tell me something", 30, stop=(stop,))
    assert text == full[: full.find(stop)] and done.finish_reason == "stop"
    engine, sink = engine_factory(), Sink()
    engine.submit(b"c", request("tell me something", 30))
    engine.step(sink)
    engine.cancel(b"c", sink)
    assert not engine.active and sink.ends[b"c"].finish_reason == "cancelled"
    assert sink.ends[b"c"].usage.completion_tokens == 1


def test_the_next_turn_starts_from_the_cache_left_by_a_request_that_ran_alone(engine_factory) -> None:
    engine, sink = engine_factory(), Sink()
    engine.submit(b"1", request("remember the number seven", 8))
    while engine.active:
        engine.step(sink)
    first = sink.ends[b"1"].usage
    follow = Generate(ChatInput((Message("user", "remember the number seven"), Message("assistant", sink.text[b"1"]),
                                 Message("user", "which number?"))), Sampling(max_tokens=4, temperature=0.0))
    started = engine.submit(b"2", follow)
    while engine.active:
        engine.step(sink)
    usage = sink.ends[b"2"].usage
    assert usage.cached_tokens >= first.prompt_tokens
    # the prompt and its cached part are known when the request is accepted, before any token
    assert started == Started(usage.prompt_tokens, usage.cached_tokens)


@pytest.mark.parametrize("steps_before_join", [0, 3, 9])
def test_a_constrained_request_moved_into_the_batch_keeps_its_grammar(tiny_lm: Path, steps_before_join: int) -> None:
    """The matcher reads the tokens actually sampled: the token re-fed on the move into the batch
    is not consumed twice, and the reply is the one the request gets alone."""
    import json

    from mlx_lm import load

    from mlx_fleet.protocol import ResponseFormat
    from mlx_fleet.worker.engines.text import TextEngine

    model, tokenizer = load(str(tiny_lm))
    schema = {"type": "object", "additionalProperties": False, "required": ["a", "b"],
              "properties": {"a": {"enum": ["x", "yy"]}, "b": {"type": "integer", "minimum": 0, "maximum": 99}}}
    constrained = Generate(ChatInput((Message("user", "json please"),)), Sampling(max_tokens=60, temperature=0.0),
                           ResponseFormat("json_schema", json.dumps(schema)))
    alone, sink = TextEngine(model, tokenizer, 2048), Sink()
    alone.submit(b"a", constrained)
    while alone.active:
        alone.step(sink)
    expected = sink.text[b"a"]
    assert sink.ends[b"a"].finish_reason == "stop" and set(json.loads(expected)) == {"a", "b"}

    engine, sink = TextEngine(model, tokenizer, 2048), Sink()
    engine.submit(b"a", constrained)
    for _ in range(steps_before_join):
        engine.step(sink)
    engine.submit(b"b", request("another one", 20))
    while engine.active:
        engine.step(sink)
    assert sink.text[b"a"] == expected
    assert sink.ends[b"b"].finish_reason == "length"


def test_a_constrained_request_reports_the_constrained_log_probabilities(tiny_lm: Path) -> None:
    """Its grammar then masks the logits mlx-lm normalizes: the alternatives the grammar forbids
    come back impossible, and the reply is the one drawn without log probabilities."""
    import math

    from mlx_lm import load

    from mlx_fleet.protocol import ResponseFormat
    from mlx_fleet.worker.generation.logprobs import IMPOSSIBLE
    from mlx_fleet.worker.engines.text import TextEngine

    model, tokenizer = load(str(tiny_lm))
    engine, sink, scored = TextEngine(model, tokenizer, 2048), Sink(), []

    def scoring_sink(kind: bytes, rid: bytes, body: bytes) -> None:
        sink(kind, rid, body)
        if kind == Kind.DELTA:
            scored.extend(decode_delta(body).logprobs)

    plain = Generate(ChatInput((Message("user", "json please"),)), Sampling(max_tokens=12, temperature=0.0),
                     ResponseFormat("json_object"))
    for rid, wanted in ((b"a", None), (b"b", 20)):
        engine.submit(rid, Generate(plain.input, plain.sampling, plain.response_format, logprobs=wanted))
        while engine.active:
            engine.step(scoring_sink)
    assert sink.text[b"a"] == sink.text[b"b"] == "".join(s.token for s in scored)
    assert any(v == IMPOSSIBLE for s in scored for _, v in s.top)  # forbidden alternatives
    assert all(sum(math.exp(v) for _, v in s.top) <= 1 + 1e-3 for s in scored)
