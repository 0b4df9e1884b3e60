"""Text generation for one mlx-lm model, with continuous batching from mlx-lm's BatchGenerator.

Requests join the running batch as they arrive and leave it when they finish or are cancelled;
each keeps its own sampler, logits processors, length limit and stop strings. Everything here
runs on the worker's single thread, between polls of its socket, so one step of the batch is the
longest a cancel or a new request ever waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import mlx.core as mx
import msgspec
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from mlx_fleet.protocol import (
    ChatInput,
    Delta,
    Done,
    Failure,
    Generate,
    Kind,
    Sampling,
    TextInput,
    TokensInput,
    Usage,
    encode,
)
from worker.stops import StopMatcher

Emit = Callable[[bytes, bytes, bytes], None]
_MODEL_KEY = "model"  # one model per worker: the prompt cache needs no other key
"""emit(kind, request_id, body): hands one message to the socket."""


@dataclass(slots=True)
class _Live:
    """One request inside the batch."""

    rid: bytes
    detokenizer: object
    stops: StopMatcher
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int = 0


class TextEngine:
    def __init__(
        self,
        model: object,
        tokenizer: object,
        context_length: int,
        *,
        completion_batch_size: int = 32,
        prefill_batch_size: int = 8,
        prefill_step_size: int = 2048,
        prompt_cache_bytes: int = 512 * 2**20,
        prompt_cache_entries: int = 64,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        # KV caches of recent requests, keyed by their tokens: a request that shares a prefix with
        # one of them (the next turn of a chat) starts from it instead of recomputing the prefix.
        self.prompt_cache = LRUPromptCache(max_size=prompt_cache_entries, max_bytes=prompt_cache_bytes)
        self._batch = BatchGenerator(
            model,
            stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
            completion_batch_size=completion_batch_size,
            prefill_batch_size=prefill_batch_size,
            prefill_step_size=prefill_step_size,
        )
        self._by_uid: dict[int, _Live] = {}
        self._uid_of: dict[bytes, int] = {}

    @property
    def active(self) -> bool:
        return bool(self._by_uid)

    def close(self) -> None:
        self._batch.close()

    # -- requests ---------------------------------------------------------------------------

    def prompt_tokens(self, request: Generate) -> list[int]:
        """The prompt as mlx-lm would tokenize it, so output matches `mlx_lm.generate` exactly."""
        source = request.input
        if isinstance(source, TokensInput):
            return list(source.tokens)
        if isinstance(source, ChatInput):
            messages = [{"role": m.role, "content": m.content} for m in source.messages]
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:
            assert isinstance(source, TextInput)
            text = source.prompt
        bos = self.tokenizer.bos_token
        return self.tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos))

    def submit(self, rid: bytes, request: Generate) -> Failure | None:
        """Add a request to the batch, or say why it cannot run."""
        tokens = self.prompt_tokens(request)
        sampling = request.sampling
        if sampling.max_tokens_is_default:
            room = self.context_length - len(tokens)
            sampling = msgspec.structs.replace(sampling, max_tokens=max(1, min(sampling.max_tokens, room)))
            request = msgspec.structs.replace(request, sampling=sampling)
        failure = self._check(tokens, request)
        if failure is not None:
            return failure
        if sampling.seed is not None:
            # MLX has one random stream per process: a seed makes a request reproducible when it
            # runs alone, as OpenAI's own `seed` is best-effort.
            mx.random.seed(sampling.seed)
        cache, rest = self._cached_prefix(tokens)
        cached = len(tokens) - len(rest)
        (uid,) = self._batch.insert(
            [rest],
            max_tokens=[sampling.max_tokens],
            caches=[cache],
            all_tokens=[tokens[:cached]],
            samplers=[_sampler(sampling)],
            logits_processors=[_logits_processors(sampling)],
        )
        self._by_uid[uid] = _Live(rid, self.tokenizer.detokenizer, StopMatcher(sampling.stop), len(tokens), cached)
        self._uid_of[rid] = uid
        return None

    def _cached_prefix(self, tokens: list[int]) -> tuple[list | None, list[int]]:
        """The longest cached KV prefix of `tokens` and the tokens still to compute (at least one:
        the batch needs a token to start from)."""
        cache, rest = self.prompt_cache.fetch_nearest_cache(_MODEL_KEY, tokens)
        if cache is not None and not rest:
            if not can_trim_prompt_cache(cache):
                return None, tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, rest

    def _remember(self, tokens: list[int] | None, cache: list | None) -> None:
        if tokens and cache is not None:
            self.prompt_cache.insert_cache(_MODEL_KEY, list(tokens), cache)

    def _check(self, tokens: list[int], request: Generate) -> Failure | None:
        param = "messages" if isinstance(request.input, ChatInput) else "prompt"
        if not tokens:
            return Failure("invalid_value", "The prompt is empty.", 400, param)
        vocab = self.tokenizer.vocab_size
        if isinstance(request.input, TokensInput) and any(not 0 <= t < vocab for t in tokens):
            bad = next(t for t in tokens if not 0 <= t < vocab)
            return Failure("invalid_value", f"Token id {bad} is out of vocabulary.", 400, "prompt")
        wanted = len(tokens) + request.sampling.max_tokens
        if wanted > self.context_length:
            return Failure(
                "context_length_exceeded",
                f"This model's maximum context length is {self.context_length} tokens. However, you "
                f"requested {wanted} tokens ({len(tokens)} in the {param}, {request.sampling.max_tokens} "
                f"in the completion). Please reduce the length of the {param} or completion.",
                400,
                param,
            )
        return None

    def cancel(self, rid: bytes, emit: Emit) -> None:
        uid = self._uid_of.get(rid)
        if uid is None:
            return
        self._batch.remove([uid])
        self._finish(uid, "cancelled", emit)

    def cancel_all(self, emit: Emit) -> None:
        for rid in list(self._uid_of):
            self.cancel(rid, emit)

    # -- the batch loop ---------------------------------------------------------------------

    def step(self, emit: Emit) -> None:
        """Advance every request by one token (or one prefill chunk) and emit what came out."""
        _, responses = self._batch.next()
        finished: list[int] = []
        for r in responses:
            live = self._by_uid[r.uid]
            live.completion_tokens += 1
            detok = live.detokenizer
            if r.finish_reason != "stop":  # the end-of-sequence token itself is not text
                detok.add_token(r.token)
            if r.finish_reason is not None:
                detok.finalize()
            text, stopped = live.stops.feed(detok.last_segment)
            finish = "stop" if stopped else r.finish_reason
            if finish is not None and not stopped:
                text += live.stops.flush()
            if text or live.completion_tokens == 1:
                # the first token always goes out, text or not: the client's first byte (the
                # stream's opening chunk) then marks the model's first token, not the first letter
                emit(Kind.DELTA, live.rid, encode(Delta(text)))
            if finish is not None:
                if r.finish_reason is None:  # a stop string ended it: leave the batch now
                    finished.append(r.uid)
                else:
                    self._remember(r.all_tokens, r.prompt_cache)
                self._finish(r.uid, finish, emit)
        if finished:
            for tokens_cache in self._batch.remove(finished, return_prompt_caches=True).values():
                cache, tokens = tokens_cache
                self._remember(tokens, cache)

    def _finish(self, uid: int, reason: str, emit: Emit) -> None:
        live = self._by_uid.pop(uid)
        del self._uid_of[live.rid]
        usage = Usage(live.prompt_tokens, live.completion_tokens, live.cached_tokens)
        emit(Kind.END, live.rid, encode(Done(reason, usage)))


def _sampler(s: Sampling):
    return make_sampler(
        temp=s.temperature,
        top_p=s.top_p if s.top_p < 1.0 else 0.0,
        min_p=s.min_p,
        top_k=s.top_k,
    )


def _logits_processors(s: Sampling):
    return make_logits_processors(
        repetition_penalty=s.repetition_penalty,
        presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty,
    )
