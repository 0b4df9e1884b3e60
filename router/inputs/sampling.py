"""Sampling as the worker takes it, built the one way every API builds it: what a request leaves
out is the model's default (its configured temperature) or the server's (`default_max_tokens`,
`default_temperature`); an API maps its own fields onto these arguments."""

from __future__ import annotations

from mlx_fleet.config import ModelConfig, ServerConfig
from mlx_fleet.protocol import Sampling


def build_sampling(server: ServerConfig, model: ModelConfig, max_tokens: int | None, *, ceiling: bool = False,
                   temperature: float | None = None, top_p: float | None = None, top_k: int | None = None,
                   min_p: float | None = None, seed: int | None = None, stop: tuple[str, ...] = (),
                   repetition_penalty: float | None = None, frequency_penalty: float | None = None,
                   presence_penalty: float | None = None) -> Sampling:
    """`ceiling`: `max_tokens` is an upper bound the worker may shorten to what fits in the
    context, as it may a limit the request left out."""
    default_temperature = server.default_temperature if model.temperature is None else model.temperature
    return Sampling(
        max_tokens=max_tokens or server.default_max_tokens,
        temperature=default_temperature if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=top_k or 0,
        min_p=min_p or 0.0,
        seed=seed,
        stop=stop,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty or None,
        presence_penalty=presence_penalty or None,
        max_tokens_is_default=ceiling or max_tokens is None,
    )
