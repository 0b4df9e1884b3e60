"""Constrained decoding with llguidance: a grammar per request, applied in its own sampler, so it
runs the same on mlx-lm's lone-request `generate_step` and inside its `BatchGenerator`, where the
batch's other sequences never pay for it.

The matcher advances from the tokens the request's sampler actually drew, never from a count of
its own calls: when a lone request moves into the batch, the token its loop drew ahead is
dropped and its last token fed again, and the matcher must not consume either twice. A thinking model's
grammar waits until its thinking block has closed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import llguidance
import llguidance.hf
import llguidance.numpy
import mlx.core as mx
import numpy as np

from mlx_fleet.protocol import Failure, ResponseFormat, Tool

# Compact JSON, as OpenAI's structured outputs produce it; without flexible whitespace a weak
# model cannot spend its whole budget on blank lines inside an object.
_JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
_ANY_OBJECT = {"type": "object"}


Sampler = Callable[[mx.array], mx.array]


class GrammarError(ValueError):
    """A grammar llguidance cannot compile: the client's fault, reported against `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param

    def failure(self) -> Failure:
        return Failure("invalid_value", str(self), 400, self.param)


def response_format_grammar(fmt: ResponseFormat) -> str | None:
    if fmt.type == "text":
        return None
    schema = _ANY_OBJECT if fmt.type == "json_object" else fmt.schema_json
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)
    except ValueError as e:
        raise GrammarError("response_format", f"Invalid JSON schema: {e}") from None


def tool_call_grammar(tools: tuple[Tool, ...], start: str, end: str, as_tokens: bool) -> str:
    """One call, in the `json_tools` format (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
    Qwen's and Hermes'), whose arguments validate against the chosen function's schema."""
    alternatives = []
    for tool in tools:
        parameters = json.loads(tool.parameters_json) if tool.parameters_json else _ANY_OBJECT
        call = {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                "properties": {"name": {"const": tool.name}, "arguments": parameters}, "x-guidance": _JSON_OPTIONS}
        alternatives.append("%json " + json.dumps(call, separators=(",", ":")))
    open_, close = (start, end) if as_tokens else (json.dumps(start), json.dumps(end))
    lark = f'start: {open_} "\\n" call "\\n" {close}\ncall: ' + " | ".join(alternatives) + "\n"
    return llguidance.LLMatcher.grammar_from_lark(lark)


class Grammars:
    """Compiles grammars against one (Hugging Face fast) tokenizer. Building llguidance's view of
    a vocabulary walks all of it (~1 s for 150k tokens): it is built on the first constrained
    request, once."""

    def __init__(self, hf_tokenizer: Any, eos_ids: Iterable[int]) -> None:
        self._tokenizer = hf_tokenizer
        self._eos = sorted(eos_ids)
        self._llg: llguidance.LLTokenizer | None = None

    @property
    def llg(self) -> llguidance.LLTokenizer:
        if self._llg is None:
            self._llg = llguidance.hf.from_tokenizer(self._tokenizer, eos_token=self._eos)
        return self._llg

    def processor(self, grammar: str, param: str, think_end: int | None) -> GrammarProcessor:
        """A fresh processor for one request; `think_end` holds it back until that token."""
        matcher = llguidance.LLMatcher(self.llg, grammar, log_level=0)  # compiles; an error is its state
        if matcher.is_error():
            raise GrammarError(param, f"The grammar cannot be compiled: {matcher.get_error()}")
        return GrammarProcessor(matcher, self.llg.vocab_size, think_end)


class GrammarProcessor:
    """One request's grammar, applied where it costs the batch least: in the request's own
    sampler (`attach`), on its row of log probabilities. A logits processor on any sequence puts
    mlx-lm's whole batch on its per-sequence path (a slice, a token buffer and a concatenation
    for every sequence, each step), which cost 8 streams of a small model a third of their speed;
    the sampler is called per sequence anyway. Only a request that wants log probabilities also
    runs it as a logits processor (`__call__`), so the ones it reports are the constrained
    distribution's.

    The matcher reads each token from the array the sampler returned (already computed, or
    queued before this step's forward pass), not from the history: reading that would add an op
    and a wait for each sequence, each step. Only where it is not attached to the sampler
    (mlx-vlm's generator takes no sampler) does it read the history. (Sending this step's forward off before waiting,
    with `async_eval`, made the CPU backend slower: measured, not kept.)
    """

    __slots__ = ("_matcher", "_mask", "_think_end", "_drawn", "_attached", "_read")

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, think_end: int | None) -> None:
        self._matcher = matcher
        self._mask = llguidance.numpy.allocate_token_bitmask(1, vocab_size)
        self._think_end = think_end  # None: the grammar applies from the first token
        self._drawn: mx.array | None = None  # the token(s) drawn since the last mask, not yet consumed
        self._attached = False  # to a sampler of the request; else the history says what was drawn
        self._read: int | None = None  # how much of that history has been read

    def attach(self, sample: Sampler, processors: list, *, logprobs: bool, top_p: bool) -> Sampler:
        """The request's sampler, constrained; `processors` gains this one where `logprobs` are
        reported. `top_p`: the sampler keeps a share of the probability mass, so the masked row
        is renormalized first (mask-then-normalize, as a logits processor would)."""
        self._attached = True
        if logprobs:
            processors.append(self)

        def draw(row: mx.array) -> mx.array:
            if not logprobs:
                row = self._constrain(row)
                if top_p and self._think_end is None:
                    row = row - mx.logsumexp(row, axis=-1, keepdims=True)
            self._drawn = sample(row)
            return self._drawn

        return draw

    def __call__(self, history: mx.array, logits: mx.array) -> mx.array:
        if self._attached:
            mx.async_eval(history)  # generate_step's history is a chain of lazy concatenations
        elif self._read is None:  # a generator whose sampler is not ours (mlx-vlm's): the prompt
            self._read = history.shape[-1]
        elif history.shape[-1] > self._read:  # ... then what it drew since
            self._drawn, self._read = history[self._read:], history.shape[-1]
        return self._constrain(logits)

    def forget_draw(self) -> None:
        """The generator drew a token ahead that the request will not keep: a lone request
        moving into the batch recomputes it there, so the matcher must not consume it."""
        self._drawn = None

    def _constrain(self, row: mx.array) -> mx.array:
        if self._drawn is not None:
            tokens, self._drawn = self._drawn.tolist(), None
            if self._think_end in tokens:
                tokens, self._think_end = tokens[tokens.index(self._think_end) + 1:], None
            if self._think_end is None and tokens:
                self._matcher.consume_tokens(tokens)
        if self._think_end is not None:
            return row
        llguidance.numpy.fill_next_token_bitmask(self._matcher, self._mask, 0)
        return _APPLY(row, self._mask)


def _apply_unpacked(logits: mx.array, mask: np.ndarray) -> mx.array:
    """The bitmask unpacked on the host (one numpy call) and applied with one `mx.where`: works
    on every backend (llguidance's own MLX path is a Metal kernel, which the CPU backend cannot
    run), and puts two ops in the step's graph instead of one per unpacking stage. Ids past the
    tokenizer's (a vocabulary padded for the matmul) unpack as disallowed: they never decode."""
    allowed = np.unpackbits(mask.view(np.uint8), axis=-1, count=logits.shape[-1], bitorder="little")
    return mx.where(mx.array(allowed.view(np.bool_)), logits, -math.inf)


def _apply_on_metal(logits: mx.array, mask: np.ndarray) -> mx.array:
    import llguidance.mlx

    return llguidance.mlx.apply_token_bitmask(logits, mask)


_APPLY = _apply_on_metal if mx.default_device() == mx.gpu and mx.metal.is_available() else _apply_unpacked
