"""Text generation for one mlx-lm model: mlx-lm's own loop for one request, its BatchGenerator
for several.

A request that arrives alone runs on `generate_step`, mlx-lm's single-sequence loop, which
overlaps the next step's compute with this step's Python (`async_eval`) and has no batch
bookkeeping: it is the fastest way to decode one stream. When a second request arrives, the
running one moves into a `BatchGenerator` with its KV cache (nothing is recomputed but the last
token) and both continue there, joining and leaving the batch as they arrive and finish; each
keeps its own sampler, logits processors, length limit and stop strings. Everything runs on the
worker's single thread, between polls of its socket, so one decode step is the longest a cancel
or a new request ever waits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import load
from mlx_lm.utils import _download
from mlx_lm.generate import BatchGenerator, generate_step
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler

from mlx_fleet.protocol import Delta, Done, Failure, Generate, Kind, Sampling, Started, TokenCount, Usage, encode
from mlx_fleet.worker.engines.base import Emit, Engine, context_length_of
from mlx_fleet.worker.generation.constrain import GrammarProcessor, Grammars
from mlx_fleet.worker.generation.logprobs import token_logprob
from mlx_fleet.worker.generation.reply_split import ReplyParser
from mlx_fleet.worker.generation.request_checks import check_request, fit_to_context
from mlx_fleet.worker.generation.request_plan import Refused, plan, prompt_text
from mlx_fleet.worker.generation.stops import StopMatcher
from mlx_fleet.worker.prompt_store.disk_tier import DiskTier
from mlx_fleet.worker.prompt_store.identity import BLOCK_TOKENS

_MODEL_KEY = "model"  # one model per worker: the prompt cache needs no other key
MIN_REUSED_TOKENS = 64  # a shorter shared prefix is recomputed rather than copied out of the cache


@dataclass(slots=True)
class _Live:
    """One running request, wherever it runs (alone, or in the batch)."""

    rid: bytes
    detokenizer: Any
    stops: StopMatcher
    sampler: Any
    processors: list
    max_tokens: int
    prompt: list[int]            # the whole prompt
    cached_tokens: int           # how much of it came from the prompt cache
    generated: list[int] = field(default_factory=list)
    uid: int | None = None       # its id in the batch, once it is there
    solo: Iterator | None = None  # its generate_step loop, while it runs alone
    cache: list | None = None     # its KV cache, while it runs alone
    reply: ReplyParser | None = None        # splits thinking and tool calls from the answer
    grammar: GrammarProcessor | None = None  # constrains what it may generate
    logprobs: int | None = None             # alternatives wanted with each token's logprob

class TextEngine(Engine):
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
        disk: DiskTier | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self._eos = frozenset(tokenizer.eos_token_ids)
        # KV caches of recent requests, keyed by their tokens: a request that shares a prefix with
        # one of them (the next turn of a chat) starts from it instead of recomputing the prefix.
        self.prompt_cache = LRUPromptCache(max_size=prompt_cache_entries, max_bytes=prompt_cache_bytes)
        # The same, as blocks on disk shared by the fleet: they outlive this process.
        self.disk = disk
        self._batch = BatchGenerator(
            model,
            stop_tokens=[[t] for t in sorted(tokenizer.eos_token_ids)],
            completion_batch_size=completion_batch_size,
            prefill_batch_size=prefill_batch_size,
            prefill_step_size=prefill_step_size,
        )
        self._live: dict[bytes, _Live] = {}   # every running request, by request id
        self._by_uid: dict[int, _Live] = {}   # those in the batch, by batch id
        self._solo: _Live | None = None       # the one running alone, if any
        self._grammars = Grammars(tokenizer._tokenizer, tokenizer.eos_token_ids)

    @property
    def active(self) -> bool:
        return bool(self._live)

    def close(self) -> None:
        self._batch.close()
        if self.disk is not None:
            self.disk.close()

    # -- requests ---------------------------------------------------------------------------

    def prompt_tokens(self, request: Generate) -> tuple[list[int], list[dict] | None]:
        """The prompt as mlx-lm would tokenize it, so output matches `mlx_lm.generate` exactly,
        and the tools it offers; raises `Refused` for a conversation the template rejects."""
        text, tools = prompt_text(self.tokenizer, request)
        if isinstance(text, list):
            return text, tools
        bos = self.tokenizer.bos_token
        return self.tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos)), tools

    def count(self, request: Generate) -> TokenCount | Failure:
        try:
            return TokenCount(len(self.prompt_tokens(request)[0]))
        except Refused as e:
            return e.failure

    def submit(self, rid: bytes, request: Generate) -> Started | Failure:
        """Add a request to the batch, or say why it cannot run."""
        try:
            tokens, tools = self.prompt_tokens(request)
            sampling = fit_to_context(request.sampling, len(tokens), self.context_length)
            failure = check_request(request, sampling, len(tokens), self.tokenizer.vocab_size, self.context_length)
            if failure is not None:
                return failure
            shape = plan(self.tokenizer, self._grammars, request, tokens, tools)
        except Refused as e:
            return e.failure
        if sampling.seed is not None:
            # MLX has one random stream per process: a seed makes a request reproducible when it
            # runs alone, as OpenAI's own `seed` is best-effort.
            mx.random.seed(sampling.seed)
        cache, rest = self._cached_prefix(tokens)
        processors, sampler = _logits_processors(sampling), _sampler(sampling)
        if shape.grammar is not None:
            sampler = shape.grammar.attach(sampler, processors, logprobs=request.logprobs is not None,
                                           top_p=sampling.temperature > 0 and sampling.top_p < 1.0)
        live = _Live(rid, self.tokenizer.detokenizer, StopMatcher(sampling.stop), sampler, processors,
                     sampling.max_tokens, tokens, len(tokens) - len(rest), reply=shape.reply, grammar=shape.grammar,
                     logprobs=request.logprobs)
        self._live[rid] = live
        if len(self._live) == 1:
            self._run_alone(live, cache, rest)
        else:
            if self._solo is not None:
                self._join_batch(self._solo)
            self._insert(live, cache, rest, tokens[: live.cached_tokens], live.max_tokens)
        return Started(len(tokens), live.cached_tokens)

    def _run_alone(self, live: _Live, cache: list | None, rest: list[int]) -> None:
        live.cache = cache if cache is not None else make_prompt_cache(self.model)
        live.solo = generate_step(mx.array(rest), self.model, max_tokens=live.max_tokens, sampler=live.sampler,
                                  logits_processors=live.processors, prompt_cache=live.cache)
        self._solo = live

    def _join_batch(self, live: _Live) -> None:
        """Move the request running alone into the batch, with its KV cache. generate_step has
        already fed its last token to the model (to compute the next one ahead); that entry is
        trimmed and the token fed again in the batch, so the batch goes on exactly from there."""
        live.solo.close()
        cache, live.solo, live.cache = live.cache, None, None
        self._solo = None
        if live.grammar is not None:
            live.grammar.forget_draw()
        history = live.prompt + live.generated
        if live.generated and can_trim_prompt_cache(cache):
            trim_prompt_cache(cache, 1)
            self._insert(live, cache, history[-1:], history[:-1], live.max_tokens - len(live.generated))
        else:  # nothing generated yet (or an untrimmable cache): start it over in the batch
            self._insert(live, None, live.prompt, [], live.max_tokens)

    def _insert(self, live: _Live, cache: list | None, rest: list[int], history: list[int], max_tokens: int) -> None:
        (uid,) = self._batch.insert([rest], max_tokens=[max_tokens], caches=[cache], all_tokens=[history],
                                    samplers=[live.sampler], logits_processors=[live.processors])
        live.uid = uid
        self._by_uid[uid] = live

    def _cached_prefix(self, tokens: list[int]) -> tuple[list | None, list[int]]:
        """The longest cached KV prefix of `tokens` and the tokens still to compute (at least one:
        the batch needs a token to start from).

        Taking a cache entry copies it whole, so a short shared prefix (a chat template's first
        tokens, common to every request) is recomputed instead: on a GPU, copying a long entry
        to reuse ten tokens costs more than those ten tokens. Whole blocks on disk that reach
        further than the memory cache win (after an eviction or a restart the memory has none).
        """
        in_memory = self._reusable_prefix(tokens)
        restored = self._from_disk(tokens, in_memory)
        if restored is not None:
            return restored, tokens[restored[0].offset:]
        if in_memory < min(MIN_REUSED_TOKENS, len(tokens) // 2 + 1):
            return None, tokens
        cache, rest = self.prompt_cache.fetch_nearest_cache(_MODEL_KEY, tokens)
        if cache is not None and not rest:
            if not can_trim_prompt_cache(cache):
                return None, tokens
            trim_prompt_cache(cache, 1)
            rest = tokens[-1:]
        return cache, rest

    def _from_disk(self, tokens: list[int], in_memory: int) -> list | None:
        """A layer cache of the prompt's leading blocks on disk, if they reach past `in_memory` tokens.
        When the memory cache already holds every whole block the disk could offer (a warm turn),
        the chain is neither hashed nor looked up: that would cost each request a stat per block."""
        if self.disk is None or (len(tokens) - 1) // BLOCK_TOKENS * BLOCK_TOKENS <= in_memory:
            return None
        keys = self.disk.keys(tokens)
        stored = self.disk.stored(keys)
        if stored * BLOCK_TOKENS <= in_memory:
            return None
        cache = self.disk.restore(keys[:stored])
        return cache if cache is not None and cache[0].offset > in_memory else None

    def _reusable_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens a cache entry shares with `tokens` (a trie walk, no copy)."""
        found = self.prompt_cache._trie.search(_MODEL_KEY, tokens)  # mlx-lm has no public peek
        if found.exact is not None:
            return len(tokens)
        shorter = len(found.shorter) if found.shorter is not None else 0
        return max(shorter, found.common_prefix if found.longer is not None else 0)

    def _remember(self, tokens: list[int] | None, cache: list | None) -> None:
        if tokens and cache is not None:
            if self.disk is not None:
                self.disk.persist(tokens, cache)
            self.prompt_cache.insert_cache(_MODEL_KEY, list(tokens), cache)

    def cancel(self, rid: bytes, emit: Emit) -> None:
        live = self._live.get(rid)
        if live is None:
            return
        if live.uid is not None:
            self._batch.remove([live.uid])
        self._finish(live, "cancelled", emit)

    def cancel_all(self, emit: Emit) -> None:
        for rid in list(self._live):
            self.cancel(rid, emit)

    # -- the batch loop ---------------------------------------------------------------------

    def step(self, emit: Emit) -> None:
        """Advance every request by one token (or one prefill chunk) and emit what came out."""
        live = self._solo
        if live is not None:
            token, logprobs = next(live.solo, (None, None))
            if token is None:  # generate_step ran out: max_tokens reached
                self._emit_token(live, None, "length", emit)
            else:
                reason = "stop" if token in self._eos else "length" if len(live.generated) + 1 >= live.max_tokens else None
                self._emit_token(live, token, reason, emit, logprobs=logprobs)
            return
        _, responses = self._batch.next()
        leaving: list[int] = []
        for r in responses:
            live = self._by_uid[r.uid]
            if self._emit_token(live, r.token, r.finish_reason, emit, r.all_tokens, r.prompt_cache, r.logprobs):
                leaving.append(r.uid)  # a stop string ended it: it is still in the batch
        if leaving:
            for cache, tokens in self._batch.remove(leaving, return_prompt_caches=True).values():
                self._remember(tokens, cache)

    def _emit_token(self, live: _Live, token: int | None, reason: str | None, emit: Emit,
                    history: list[int] | None = None, cache: list | None = None,
                    logprobs: mx.array | None = None) -> bool:
        """Detokenize, match stop strings, emit; returns whether a stop string ended a request
        that its generator would otherwise have kept going."""
        detok = live.detokenizer
        if token is not None:
            live.generated.append(token)
            if reason != "stop":  # the end-of-sequence token itself is not text
                detok.add_token(token)
        if reason is not None:
            detok.finalize()
        text, stopped = live.stops.feed(detok.last_segment)
        finish = "stop" if stopped else reason
        if finish is not None and not stopped:
            text += live.stops.flush()
        if live.reply is None and live.logprobs is None:
            if text or len(live.generated) == 1:
                # the first token always goes out, text or not: the client's first byte (the
                # stream's opening chunk) then marks the model's first token, not the first letter
                emit(Kind.DELTA, live.rid, encode(Delta(text)))
        else:
            self._emit_shaped(live, text, token if reason != "stop" else None, logprobs, finish is not None, emit)
        if finish is None:
            return False
        if finish == "stop" and live.reply is not None and live.reply.made_call:
            finish = "tool_calls"
        solo_cache = live.cache
        self._finish(live, finish, emit)  # the client's answer first; the cache bookkeeping after
        if solo_cache is not None:
            self._remember(live.prompt + live.generated, solo_cache)
        elif reason is not None:
            self._remember(history, cache)
        return live.uid is not None and reason is None

    def _emit_shaped(self, live: _Live, text: str, token: int | None, logprobs: mx.array | None, final: bool,
                     emit: Emit) -> None:
        """A Delta with thinking, tool calls or log probabilities split out (not the plain path)."""
        reasoning, calls = "", ()
        if live.reply is not None:
            text, reasoning, calls = live.reply.feed(text, final)
        scored = ()
        if live.logprobs is not None and token is not None and logprobs is not None:
            scored = (token_logprob(self.tokenizer.decode, token, logprobs, live.logprobs),)
        if text or reasoning or calls or scored or len(live.generated) == 1:
            emit(Kind.DELTA, live.rid, encode(Delta(text, 1, reasoning, calls, scored)))

    def _finish(self, live: _Live, reason: str, emit: Emit) -> None:
        if live.solo is not None:
            live.solo.close()
            live.solo = live.cache = None
        del self._live[live.rid]
        if live.uid is not None:
            self._by_uid.pop(live.uid, None)
        if self._solo is live:
            self._solo = None
        usage = Usage(len(live.prompt), len(live.generated), live.cached_tokens)
        emit(Kind.END, live.rid, encode(Done(reason, usage, live.stops.matched)))


def load_text(path: str, *, prompt_cache_bytes: int, disk_dir: Path | None = None, disk_bytes: int = 0) -> TextEngine:
    """Load an mlx-lm model directory (or cached repo id) into a `TextEngine`, with the prompt
    cache's disk tier when `disk_dir` and `disk_bytes` give one."""
    model_dir = _download(path)
    model, tokenizer, config = load(str(model_dir), return_config=True)
    disk = DiskTier.open(model, model_dir, disk_dir, disk_bytes) if disk_dir is not None else None
    return TextEngine(model, tokenizer, context_length_of(config, tokenizer), prompt_cache_bytes=prompt_cache_bytes,
                      disk=disk)


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
