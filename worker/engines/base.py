"""What the worker's loop asks of an engine, and the helpers the engines share.

An engine serves one loaded model on the worker's single thread. The loop hands it each request
as it arrives and, while it is `active`, calls `step` between polls of the socket, so a new
request or a cancel waits at most one step. A generating engine (text, vision) answers through
`emit`, a token at a time; an embedding engine answers `embed` in one call. The engines subclass
`Engine` to take its defaults for what they do not serve: a request of a kind the engine does
not serve raises `Unsupported` (the worker answers 400), and an engine with nothing running
between requests has nothing to step or cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from mlx_fleet.protocol import Embed, Embeddings, Failure, Generate, Started, TokenCount

Emit = Callable[[bytes, bytes, bytes], None]
"""emit(kind, request_id, body): hands one message to the socket."""

# A model whose config and tokenizer give no context length gets this.
DEFAULT_CONTEXT = 4096
# Tokenizers without a limit report ~1e30; anything this big is "no limit".
NO_LIMIT = 10_000_000


class Unsupported(Exception):
    """The engine does not serve this kind of request; the message names the kind."""


class Engine(Protocol):
    # The longest input in tokens: prompt plus completion, or one input to embed.
    context_length: int

    @property
    def active(self) -> bool:
        """Whether `step` has work: a request running or waiting."""
        return False

    def submit(self, rid: bytes, request: Generate) -> Started | Failure:
        """Accept a generation request (its tokens go out through `step`) and say how long its
        prompt is, or say why it cannot run."""
        raise Unsupported("chat and text completions")

    def count(self, request: Generate) -> TokenCount | Failure:
        """How many tokens the prompt of `request` is, tokenized exactly as `submit` would."""
        raise Unsupported("token counting")

    def embed(self, request: Embed) -> Embeddings | Failure:
        """Answer an embedding request whole."""
        raise Unsupported("embeddings")

    def step(self, emit: Emit) -> None:
        """Advance the running requests by one token and emit what came out."""

    def cancel(self, rid: bytes, emit: Emit) -> None:
        """End a running or queued request now, with finish reason "cancelled"."""

    def cancel_all(self, emit: Emit) -> None:
        """Cancel every request (the worker is exiting)."""


def config_value(config: Any, name: str) -> Any:
    """A model config's value (a dict or an object), its language part's (`text_config`) first."""
    text_config = config.get("text_config") if isinstance(config, dict) else getattr(config, "text_config", None)
    for holder in (text_config, config):
        if holder is None:
            continue
        value = holder.get(name) if isinstance(holder, dict) else getattr(holder, name, None)
        if value is not None:
            return value
    return None


def vocab_size(config: Any, tokenizer: Any) -> int:
    """Rows of the embedding table (larger ids would index past it), else the tokenizer's size."""
    value = config_value(config, "vocab_size")
    if isinstance(value, int) and value > 0:
        return value
    return len(tokenizer)


def tokenizer_limit(tokenizer: Any) -> int | None:
    """The tokenizer's declared maximum length, if it declares a real one."""
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < NO_LIMIT else None


def context_length_of(config: Any, tokenizer: Any, default: int = DEFAULT_CONTEXT) -> int:
    """The longest sequence a model takes, read the same way for every engine: its position table
    (the language part's first), else its tokenizer's declared limit, else `default`."""
    positions = config_value(config, "max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        return positions
    return tokenizer_limit(tokenizer) or default
