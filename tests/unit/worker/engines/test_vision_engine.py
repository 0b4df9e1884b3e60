"""`worker.engines.vision.VisionEngine` on a real (tiny, random) Qwen2-VL model, in process.

The model goes through `mlx_vlm.load` like a user's model; the engine is driven the way the
worker drives it (submit, then step() until inactive, messages collected from `emit`). The
reference for the output is mlx-vlm itself: `stream_generate` with the same prompt, image and
sampling must produce the same text. Random weights repeat one token under greedy decoding, so
seeded sampling at temperature 1 is used where varied text matters (stop strings).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from mlx_fleet.protocol import (
    ChatInput,
    Delta,
    Done,
    Failure,
    Generate,
    ImageData,
    Kind,
    Message,
    Sampling,
    Started,
    TextInput,
    TokensInput,
    decode_delta,
    decode_end,
)
from tiny_models import build_tiny_qwen2_vl
from mlx_fleet.worker.engines.vision import VisionEngine, load_vision

Event = tuple[bytes, Delta | Done | Failure | Any]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("vlm") / "tiny-qwen2-vl")


@pytest.fixture(scope="module")
def engine(model_dir: Path) -> Iterator[VisionEngine]:
    engine = load_vision(str(model_dir))
    yield engine
    engine.close()


class Collector:
    """A list-appending `emit`, decoding each message as the supervisor would."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, kind: bytes, rid: bytes, body: bytes) -> None:
        assert kind in (Kind.DELTA, Kind.END)
        self.events.append((rid, decode_delta(body) if kind == Kind.DELTA else decode_end(body)))

    def text(self, rid: bytes) -> str:
        return "".join(e.text for r, e in self.events if r == rid and isinstance(e, Delta))

    def end(self, rid: bytes) -> Done | Failure:
        ends = [e for r, e in self.events if r == rid and not isinstance(e, Delta)]
        assert len(ends) == 1, ends
        return ends[0]


def run(engine: VisionEngine, emit: Collector, max_steps: int = 1000) -> int:
    """Step until the engine is idle; returns the number of steps."""
    steps = 0
    while engine.active:
        engine.step(emit)
        steps += 1
        assert steps <= max_steps
    return steps


def make_image(width: int = 56, height: int = 56, seed: int = 0) -> tuple[ImageData, Image.Image]:
    rgb = (np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8")
    return ImageData(width, height, rgb.tobytes()), Image.fromarray(rgb, "RGB")


def chat(*messages: Message, **sampling: Any) -> Generate:
    sampling.setdefault("max_tokens", 8)
    sampling.setdefault("temperature", 0.0)
    return Generate(ChatInput(tuple(messages)), Sampling(**sampling))


def oracle(engine: VisionEngine, messages: list[dict[str, Any]], images: list[Image.Image], **kwargs: Any) -> tuple[str, Any]:
    """mlx-vlm's own answer: its chat template and stream_generate, in process."""
    from mlx_vlm import apply_chat_template, stream_generate

    prompt = apply_chat_template(engine.processor, engine.config, messages, num_images=len(images))
    last = None
    pieces = []
    for last in stream_generate(engine.model, engine.processor, prompt, image=images or None, **kwargs):
        pieces.append(last.text)
    return "".join(pieces), last


# --------------------------------------------------------------------------- generation


def test_image_request_runs_to_max_tokens(engine: VisionEngine) -> None:
    img, _ = make_image()
    emit = Collector()
    started = engine.submit(b"r1", chat(Message("user", "What is in this picture?", (img,)), max_tokens=8))
    assert isinstance(started, Started)
    assert engine.active
    steps = run(engine, emit)

    done = emit.end(b"r1")
    assert isinstance(done, Done)
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 8
    assert done.usage.prompt_tokens == started.prompt_tokens > 0  # known when the request is accepted
    # One token per step, plus the step that reads mlx-vlm's closing result.
    assert steps == 9
    deltas = [e for _, e in emit.events if isinstance(e, Delta)]
    assert sum(d.tokens for d in deltas) == 8
    assert emit.events[-1][1] is done
    assert not engine.active


def test_output_equals_mlx_vlm_stream_generate(engine: VisionEngine) -> None:
    img, pil = make_image(seed=3)
    emit = Collector()
    request = chat(Message("system", "Be brief."), Message("user", "Describe it.", (img,)), max_tokens=10)
    assert isinstance(engine.submit(b"o", request), Started)
    run(engine, emit)

    expected, last = oracle(
        engine,
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}],
        [pil], max_tokens=10, temperature=0.0,
    )
    done = emit.end(b"o")
    assert emit.text(b"o") == expected
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (last.prompt_tokens, last.generation_tokens)
    assert done.finish_reason == last.finish_reason == "length"


def test_seeded_sampling_equals_mlx_vlm(engine: VisionEngine) -> None:
    """Sampling parameters reach mlx-vlm unchanged: same seed, same text."""
    img, pil = make_image(seed=4)
    emit = Collector()
    request = chat(Message("user", "Go on.", (img,)), max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert isinstance(engine.submit(b"s", request), Started)
    run(engine, emit)
    expected, _ = oracle(engine, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Go on."}]}],
                         [pil], max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    assert emit.text(b"s") == expected
    assert len(set(expected)) > 1  # varied text, so the comparison means something


def test_images_in_several_messages_and_prompt_tokens(engine: VisionEngine) -> None:
    """Each message keeps its own images, in order; a 112x112 image costs 16 tokens, 56x56 4."""
    small, small_pil = make_image(56, 56, seed=1)
    big, big_pil = make_image(112, 112, seed=2)
    emit = Collector()
    request = chat(
        Message("user", "First picture.", (small,)),
        Message("assistant", "Seen."),
        Message("user", "And these two?", (big, small)),
        max_tokens=4,
    )
    assert isinstance(engine.submit(b"m", request), Started)
    run(engine, emit)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "First picture."}]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "And these two?"}]},
    ]
    expected, last = oracle(engine, messages, [small_pil, big_pil, small_pil], max_tokens=4, temperature=0.0)
    done = emit.end(b"m")
    assert emit.text(b"m") == expected
    assert done.usage.prompt_tokens == last.prompt_tokens

    text_only = Collector()
    assert isinstance(engine.submit(b"t", chat(Message("user", "First picture."), max_tokens=4)), Started)
    run(engine, text_only)
    # Same text without the three images: 4 + 16 + 4 image tokens and 3 x 2 vision markers fewer.
    with_images = done.usage.prompt_tokens
    without = text_only.end(b"t").usage.prompt_tokens
    assert with_images > without
    prompt_with_first_image_only = Collector()
    assert isinstance(engine.submit(b"f", chat(Message("user", "First picture.", (small,)), max_tokens=1)), Started)
    run(engine, prompt_with_first_image_only)
    assert prompt_with_first_image_only.end(b"f").usage.prompt_tokens == without + 4 + 2


def test_text_only_chat_plain_prompt_and_token_ids(engine: VisionEngine) -> None:
    emit = Collector()
    assert isinstance(engine.submit(b"c", chat(Message("user", "Tell me about bread."), max_tokens=5)), Started)
    greedy = Sampling(max_tokens=5, temperature=0.0)
    assert isinstance(engine.submit(b"p", Generate(TextInput("The old lighthouse"), greedy)), Started)
    ids = engine.tokenizer.encode("The old lighthouse")
    assert engine.submit(b"k", Generate(TokensInput(tuple(ids)), greedy)) == Started(len(ids))
    run(engine, emit)

    expected, _ = oracle(engine, [{"role": "user", "content": "Tell me about bread."}], [], max_tokens=5, temperature=0.0)
    assert emit.text(b"c") == expected
    for rid in (b"c", b"p", b"k"):
        done = emit.end(rid)
        assert isinstance(done, Done) and done.usage.completion_tokens == 5
    # The plain prompt and its own token ids are the same prompt.
    assert emit.text(b"p") == emit.text(b"k")
    assert emit.end(b"k").usage.prompt_tokens == len(ids)


def test_stop_string_ends_with_stop_and_is_not_emitted(engine: VisionEngine) -> None:
    img, pil = make_image(seed=5)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Say more."}]}]
    full, _ = oracle(engine, messages, [pil], max_tokens=16, temperature=1.0, seed=11)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop
    emit = Collector()
    request = chat(Message("user", "Say more.", (img,)), max_tokens=16, temperature=1.0, seed=11, stop=(stop,))
    assert isinstance(engine.submit(b"x", request), Started)
    run(engine, emit)
    done = emit.end(b"x")
    assert done.finish_reason == "stop"
    assert emit.text(b"x") == full[: full.find(stop)]
    assert done.usage.completion_tokens < 16


# --------------------------------------------------------------------------- cancel and queue


def test_cancel_running_request(engine: VisionEngine) -> None:
    img, _ = make_image()
    emit = Collector()
    assert isinstance(engine.submit(b"c1", chat(Message("user", "Hi", (img,)), max_tokens=50)), Started)
    engine.step(emit)
    engine.step(emit)
    engine.cancel(b"c1", emit)
    done = emit.end(b"c1")
    assert isinstance(done, Done)
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens == 2
    assert not engine.active
    engine.cancel(b"c1", emit)  # unknown by now: nothing more is emitted
    engine.cancel(b"never-seen", emit)
    assert len([e for r, e in emit.events if not isinstance(e, Delta)]) == 1


def test_queue_serves_in_order_and_cancels_waiting_requests(engine: VisionEngine) -> None:
    img, _ = make_image()
    emit = Collector()
    for rid in (b"a", b"b", b"c"):
        assert isinstance(engine.submit(rid, chat(Message("user", "Hi", (img,)), max_tokens=4)), Started)
    engine.step(emit)
    engine.cancel(b"b", emit)  # waiting: ends at once, nothing generated
    cancelled = emit.end(b"b")
    assert cancelled.finish_reason == "cancelled" and cancelled.usage.completion_tokens == 0
    run(engine, emit)

    order = [rid for rid, e in emit.events if not isinstance(e, Delta)]
    assert order == [b"b", b"a", b"c"]
    last_a = max(i for i, (rid, _) in enumerate(emit.events) if rid == b"a")
    first_c = min(i for i, (rid, _) in enumerate(emit.events) if rid == b"c")
    assert last_a < first_c  # one request at a time: c starts after a ended
    assert emit.text(b"a") == emit.text(b"c")
    assert emit.end(b"a").usage.completion_tokens == emit.end(b"c").usage.completion_tokens == 4


def test_cancel_all(engine: VisionEngine) -> None:
    emit = Collector()
    for rid in (b"1", b"2"):
        assert isinstance(engine.submit(rid, chat(Message("user", "Hi"), max_tokens=20)), Started)
    engine.step(emit)
    engine.cancel_all(emit)
    assert [e.finish_reason for _, e in emit.events if isinstance(e, Done)] == ["cancelled", "cancelled"]
    assert not engine.active


# --------------------------------------------------------------------------- refusals


def test_context_length_exceeded(engine: VisionEngine) -> None:
    img, _ = make_image()
    failure = engine.submit(b"z", chat(Message("user", "Hi", (img,)), max_tokens=engine.context_length))
    assert isinstance(failure, Failure)
    assert (failure.status, failure.code, failure.param) == (400, "context_length_exceeded", "messages")
    assert str(engine.context_length) in failure.message
    assert not engine.active


def test_default_max_tokens_shrinks_to_fit(engine: VisionEngine) -> None:
    emit = Collector()
    request = chat(Message("user", "Hi"), max_tokens=10**6, max_tokens_is_default=True)
    assert isinstance(engine.submit(b"d", request), Started)
    engine.step(emit)
    engine.cancel(b"d", emit)
    assert emit.end(b"d").finish_reason == "cancelled"


def test_bad_requests_are_refused(engine: VisionEngine) -> None:
    img, _ = make_image()
    short = ImageData(56, 56, b"\x00" * 10)
    failure = engine.submit(b"1", chat(Message("user", "Hi", (short,))))
    assert isinstance(failure, Failure) and failure.status == 400 and "56x56" in failure.message

    failure = engine.submit(b"2", chat(Message("user", "Hi"), Message("assistant", "Look", (img,))))
    assert isinstance(failure, Failure) and failure.status == 400 and failure.param == "messages"

    vocab = engine.vocab_size
    failure = engine.submit(b"3", Generate(TokensInput((1, vocab)), Sampling(max_tokens=2)))
    assert isinstance(failure, Failure) and failure.status == 400 and str(vocab) in failure.message

    for empty in (TokensInput(()), TextInput("")):
        failure = engine.submit(b"4", Generate(empty, Sampling(max_tokens=2)))
        assert isinstance(failure, Failure) and failure.status == 400
    assert not engine.active
