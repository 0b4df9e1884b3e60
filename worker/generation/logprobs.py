"""A generated token's log probability and its most likely alternatives, as OpenAI reports them."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx

from mlx_fleet.protocol import TokenLogprob

# What OpenAI reports for a token that cannot be chosen (JSON has no -Infinity): here, a token a
# grammar masked out, among the alternatives.
IMPOSSIBLE = -9999.0


def token_logprob(decode: Callable[[list[int]], str], token: int, logprobs: mx.array, top: int) -> TokenLogprob:
    """A sampled token's log probability and the `top` most likely tokens at its position."""
    alternatives = ()
    if top:
        ids = mx.argpartition(-logprobs, kth=top - 1)[:top]
        pairs = zip(ids.tolist(), logprobs[ids].tolist())
        alternatives = tuple(sorted(((decode([i]), max(v, IMPOSSIBLE)) for i, v in pairs), key=lambda p: -p[1]))
    return TokenLogprob(decode([token]), max(logprobs[token].item(), IMPOSSIBLE), alternatives)
