"""Generation for one mlx-vlm (vision-language) model, one request at a time, one token per step.

mlx-vlm batches only in its own server, so this engine serves requests in arrival order from a
FIFO queue. It keeps the running request's `mlx_vlm.stream_generate` generator and advances it by
exactly one token per `step()`: the worker polls its socket between steps, so a cancel or a new
request waits at most one token (the first step of a request also runs its prefill, image encoder
included). It is an `Engine` (`engines.base`), as `TextEngine` is, so the worker loop does not
care which engine it runs.

The prompt is built the way mlx-vlm's own server builds it: `apply_chat_template` with the
conversation (each message's images become image parts of that message, in order), then
`prepare_inputs` (tokenizer + image processor). The prepared tensors are handed to
`stream_generate`, which accepts caller-prepared inputs, so the prompt is processed once, its
exact token count (image tokens included) is known before the request is queued, and the output
is what `stream_generate(model, processor, prompt, image=[...])` produces for the same inputs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from PIL import Image

from mlx_fleet.protocol import (
    ChatInput,
    Delta,
    Done,
    Failure,
    Generate,
    ImageData,
    Kind,
    Sampling,
    Started,
    TextInput,
    TokenCount,
    TokensInput,
    Usage,
    encode,
)
from mlx_fleet.worker.engines.base import Emit, Engine, context_length_of, vocab_size
from mlx_fleet.worker.generation.constrain import GrammarError, GrammarProcessor, Grammars, response_format_grammar
from mlx_fleet.worker.generation.logprobs import token_logprob
from mlx_fleet.worker.generation.request_checks import (
    check_request,
    empty_prompt,
    fit_to_context,
    unsupported_by_vision,
)
from mlx_fleet.worker.generation.stops import StopMatcher

# Roles whose images mlx-vlm's prompt formatter drops (it adds image tokens to user turns only):
# accepting them would hand the model more images than the prompt has places for.
_NO_IMAGE_ROLES = frozenset({"system", "developer", "assistant"})


@dataclass(slots=True, eq=False)
class _Job:
    """One accepted request: its prepared inputs, and its progress once it runs."""

    rid: bytes
    prompt: str
    inputs: dict[str, Any]
    prompt_tokens: int
    sampling: Sampling
    stops: StopMatcher
    stream: Iterator[Any] | None = None
    completion_tokens: int = 0
    # Tokens generated since the last Delta (a token whose text the detokenizer holds back
    # is reported with the Delta that finally carries it).
    unreported_tokens: int = 0
    grammar: GrammarProcessor | None = None  # response_format's constraint
    logprobs: int | None = None             # alternatives wanted with each token's logprob


class VisionEngine(Engine):
    """Serves `Generate` requests (chat with images, plain prompts, token ids) on an mlx-vlm model."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        context_length: int | None = None,
        *,
        prefill_step_size: int | None = None,
    ) -> None:
        from mlx_vlm.utils import should_add_special_tokens

        self.model = model
        self.processor = processor
        self.config = model.config
        self.tokenizer = processor.tokenizer if hasattr(processor, "tokenizer") else processor
        self.context_length = context_length or context_length_of(self.config, self.tokenizer)
        self.vocab_size = vocab_size(self.config, self.tokenizer)
        self._prefill_step_size = prefill_step_size
        # Exactly the flag stream_generate would use when it tokenizes the prompt itself.
        self._add_special_tokens = bool(should_add_special_tokens(self.config.model_type, processor))
        self._image_token_index = getattr(self.config, "image_token_index", None)
        self._queue: deque[_Job] = deque()
        self._current: _Job | None = None
        eos = getattr(self.tokenizer, "eos_token_ids", None) or self.tokenizer.eos_token_id
        self._grammars = Grammars(self.tokenizer, [eos] if isinstance(eos, int) else eos)

    @property
    def active(self) -> bool:
        """Whether `step` has work: a request running or waiting."""
        return self._current is not None or bool(self._queue)

    def close(self) -> None:
        """Drop every request without a word (the worker is exiting; `cancel_all` reports them)."""
        if self._current is not None and self._current.stream is not None:
            self._current.stream.close()
        self._current = None
        self._queue.clear()

    # -- requests ---------------------------------------------------------------------------

    def count(self, request: Generate) -> TokenCount | Failure:
        """The prompt's tokens, image tokens included, as `submit` would prepare them."""
        refused = unsupported_by_vision(request)
        if refused is not None:
            return refused
        prepared = self._prepare(request)
        return prepared if isinstance(prepared, Failure) else TokenCount(int(prepared[1]["input_ids"].size))

    def submit(self, rid: bytes, request: Generate) -> Started | Failure:
        """Prepare a request (template, tokens, pixels) and queue it, or say why it cannot run."""
        refused = unsupported_by_vision(request)
        if refused is not None:
            return refused
        prepared = self._prepare(request)
        if isinstance(prepared, Failure):
            return prepared
        prompt, inputs = prepared
        prompt_tokens = int(inputs["input_ids"].size)
        sampling = fit_to_context(request.sampling, prompt_tokens, self.context_length)
        failure = check_request(request, sampling, prompt_tokens, self.vocab_size, self.context_length)
        if failure is not None:
            return failure
        grammar = None
        fmt = request.response_format
        if fmt is not None and fmt.type != "text":
            try:
                grammar = self._grammars.processor(response_format_grammar(fmt), "response_format", None)
            except GrammarError as e:
                return e.failure()
        self._queue.append(_Job(rid, prompt, inputs, prompt_tokens, sampling, StopMatcher(sampling.stop),
                                grammar=grammar, logprobs=request.logprobs))
        return Started(prompt_tokens)

    def _prepare(self, request: Generate) -> tuple[str, dict[str, Any]] | Failure:
        """The prompt text and mlx-vlm's model inputs (input_ids, pixel_values, mask, extras)."""
        from mlx_vlm import apply_chat_template
        from mlx_vlm.utils import prepare_inputs

        source = request.input
        if isinstance(source, TokensInput):
            if not source.tokens:
                return empty_prompt("prompt")
            ids = mx.array([list(source.tokens)], dtype=mx.int32)
            return "", {"input_ids": ids, "attention_mask": mx.ones(ids.shape, dtype=mx.int32)}

        images: list[Image.Image] = []
        if isinstance(source, ChatInput):
            param = "messages"
            messages: list[dict[str, Any]] = []
            for index, message in enumerate(source.messages):
                if message.images and message.role in _NO_IMAGE_ROLES:
                    return Failure(
                        "invalid_value",
                        f"messages[{index}]: images are only accepted in user messages, not in "
                        f"{message.role!r} messages.",
                        400,
                        param,
                    )
                for image in message.images:
                    pil = _to_pil(image)
                    if isinstance(pil, Failure):
                        return pil
                    images.append(pil)
                messages.append({"role": message.role, "content": _content(message.content, len(message.images))})
            try:
                prompt = apply_chat_template(self.processor, self.config, messages, num_images=len(images))
            except Exception as e:  # noqa: BLE001 - templates raise anything on odd conversations
                return Failure("invalid_value", f"The conversation cannot be formatted: {e}", 400, param)
        else:
            assert isinstance(source, TextInput)
            param = "prompt"
            prompt = source.prompt
            if not prompt:
                return empty_prompt(param)
        if not isinstance(prompt, str):  # some formats hand back a message, not text
            prompt = str(prompt)
        try:
            inputs = prepare_inputs(
                self.processor,
                images=images or None,
                prompts=prompt,
                image_token_index=self._image_token_index,
                add_special_tokens=self._add_special_tokens,
            )
        except Exception as e:  # noqa: BLE001 - image processors reject sizes with any exception type
            what = "images" if images else "prompt"
            return Failure("invalid_value", f"The {what} cannot be processed: {type(e).__name__}: {e}", 400, param)
        return prompt, dict(inputs)

    def cancel(self, rid: bytes, emit: Emit) -> None:
        """End a running or queued request now, with finish reason "cancelled"."""
        job = self._current
        if job is not None and job.rid == rid:
            if job.stream is not None:
                job.stream.close()
            self._current = None
            self._done(job, "cancelled", emit)
            return
        for queued in self._queue:
            if queued.rid == rid:
                self._queue.remove(queued)
                self._done(queued, "cancelled", emit)
                return

    def cancel_all(self, emit: Emit) -> None:
        if self._current is not None:
            self.cancel(self._current.rid, emit)
        while self._queue:
            self.cancel(self._queue[0].rid, emit)

    # -- the generation loop ----------------------------------------------------------------

    def step(self, emit: Emit) -> None:
        """Generate one token of the running request (starting the next one if none runs)."""
        job = self._current
        if job is None:
            if not self._queue:
                return
            job = self._current = self._queue.popleft()
            job.stream = self._start(job)
        assert job.stream is not None
        try:
            result = next(job.stream)
        except StopIteration:  # stream_generate always ends with a result that says why
            self._current = None
            self._done(job, "length", emit)
            return
        except Exception as e:  # noqa: BLE001 - one bad request must not take the worker down
            self._current = None
            job.stream.close()
            emit(Kind.END, job.rid, encode(Failure("internal_error", f"{type(e).__name__}: {e}", 500)))
            return
        self._advance(job, result, emit)

    def _start(self, job: _Job) -> Iterator[Any]:
        from mlx_vlm import stream_generate

        s = job.sampling
        if s.seed is not None:
            mx.random.seed(s.seed)
        inputs = dict(job.inputs)
        job.inputs = {}  # the generator owns the tensors now; nothing else keeps them alive
        kwargs: dict[str, Any] = {
            "input_ids": inputs.pop("input_ids"),
            "pixel_values": inputs.pop("pixel_values", None),
            "mask": inputs.pop("attention_mask", None),
            **inputs,  # image_grid_thw and friends, as stream_generate would pass them on
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "top_k": s.top_k,
            "min_p": s.min_p,
            "seed": s.seed,
            "repetition_penalty": s.repetition_penalty,
            "presence_penalty": s.presence_penalty,
            "frequency_penalty": s.frequency_penalty,
        }
        if job.grammar is not None:
            kwargs["logits_processors"] = [job.grammar]
        if self._prefill_step_size is not None:
            kwargs["prefill_step_size"] = self._prefill_step_size
        return stream_generate(self.model, self.processor, job.prompt, **kwargs)

    def _advance(self, job: _Job, result: Any, emit: Emit) -> None:
        finish = getattr(result, "finish_reason", None)
        # Every result but the last is one new token; the last one repeats the count of the one
        # before ("length") or adds the end-of-sequence token, which has no text ("stop").
        new = 1 if finish is None else max(0, int(result.generation_tokens) - job.completion_tokens)
        job.completion_tokens += new
        job.unreported_tokens += new
        text, stopped = job.stops.feed(result.text or "")
        if finish is not None and not stopped:
            text += job.stops.flush()
        scored = ()
        if job.logprobs is not None and finish is None and result.logprobs is not None:
            scored = (token_logprob(self.tokenizer.decode, result.token, result.logprobs, job.logprobs),)
        if text or scored or job.completion_tokens == new:  # the first token always goes out (see TextEngine)
            emit(Kind.DELTA, job.rid, encode(Delta(text, max(1, job.unreported_tokens), logprobs=scored)))
            job.unreported_tokens = 0
        if stopped or finish is not None:
            assert job.stream is not None
            if stopped:
                job.stream.close()
            else:
                next(job.stream, None)  # let stream_generate run its own clean-up after the last yield
            self._current = None
            self._done(job, "stop" if stopped else finish, emit)

    def _done(self, job: _Job, reason: str, emit: Emit) -> None:
        job.stream = None
        usage = Usage(job.prompt_tokens, job.completion_tokens)
        emit(Kind.END, job.rid, encode(Done(reason, usage, job.stops.matched)))


def load_vision(path: str, context_length: int | None = None) -> VisionEngine:
    """Load an mlx-vlm model directory (or cached repo id) and wrap it in a `VisionEngine`."""
    from mlx_vlm import load

    model, processor = load(path)
    return VisionEngine(model, processor, context_length)


def _content(text: str, images: int) -> str | list[dict[str, str]]:
    """A message's content for mlx-vlm: plain text, or its images as parts followed by its text.

    The wire format keeps images per message but not their position inside the text, so they
    go first, which is where mlx-vlm itself puts images it is told about by count.
    """
    if not images:
        return text
    parts: list[dict[str, str]] = [{"type": "image"} for _ in range(images)]
    if text:
        parts.append({"type": "text", "text": text})
    return parts


def _to_pil(image: ImageData) -> Image.Image | Failure:
    """RGB pixels from the wire as a PIL image, after checking that the sizes add up."""
    expected = image.width * image.height * 3
    if image.width <= 0 or image.height <= 0 or len(image.rgb) != expected:
        return Failure(
            "invalid_value",
            f"An image of {image.width}x{image.height} needs {max(expected, 0)} bytes of RGB, "
            f"not {len(image.rgb)}.",
            400,
            "messages",
        )
    return Image.frombytes("RGB", (image.width, image.height), image.rgb)
