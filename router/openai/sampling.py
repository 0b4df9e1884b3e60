"""Chat and text completions' sampling fields as the worker's `Sampling`."""

from __future__ import annotations

from mlx_fleet.config import ModelConfig, ServerConfig
from mlx_fleet.protocol import Sampling
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs.sampling import build_sampling
from mlx_fleet.router.openai import types as oa


def completion_sampling(req: oa.SamplingFields, max_tokens: int | None, server: ServerConfig,
                        model: ModelConfig) -> Sampling:
    if req.n != 1:
        raise ApiError(400, "Only n=1 is supported.", param="n", code="unsupported_value")
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       param="stream_options")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return build_sampling(server, model, max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                          min_p=req.min_p, seed=req.seed, stop=stop, repetition_penalty=req.repetition_penalty,
                          frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty)
