"""Chat and text completions' sampling parameters as the worker's `Sampling`."""

from __future__ import annotations

from mlx_fleet.config import FleetConfig, ModelConfig
from mlx_fleet.protocol import Sampling
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.openai import types as oa


def default_temperature(config: FleetConfig, model: ModelConfig) -> float:
    return config.server.default_temperature if model.temperature is None else model.temperature


def sampling_from(req: oa._Sampling, max_tokens: int | None, default_max_tokens: int,
                  default_temperature: float) -> Sampling:
    if req.n != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       param="stream_options")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return Sampling(
        max_tokens=max_tokens or default_max_tokens,
        temperature=default_temperature if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        seed=req.seed,
        stop=stop,
        repetition_penalty=req.repetition_penalty,
        frequency_penalty=req.frequency_penalty or None,
        presence_penalty=req.presence_penalty or None,
        max_tokens_is_default=max_tokens is None,
    )
