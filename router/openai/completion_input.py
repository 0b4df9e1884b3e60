"""A text completion request as the worker's API-neutral `Generate`: its prompt as a
`TextInput` or `TokensInput`, its sampling and log probabilities."""

from __future__ import annotations


from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import Generate, TextInput, TokensInput
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.openai import types as oa
from mlx_fleet.router.openai.sampling import completion_sampling
from mlx_fleet.router.router_state import RouterState


async def completion_generate(req: oa.CompletionRequest, model: ModelConfig, router: RouterState) -> Generate:
    if model.type == "embeddings":
        raise ApiError(400, f"Model '{req.model}' does not support text completions.", param="model",
                       code="model_not_supported")
    sampling = completion_sampling(req, req.max_tokens, router.config.server, model)
    return Generate(_prompt(req), sampling, None, req.logprobs)


def _prompt(req: oa.CompletionRequest) -> TextInput | TokensInput:
    if req.echo or req.suffix:
        raise ApiError(400, "echo and suffix are not supported.", code="unsupported_parameter")
    prompt = req.prompt
    if isinstance(prompt, str):
        return TextInput(prompt)
    if all(isinstance(p, int) for p in prompt):
        return TokensInput(tuple(prompt))
    if len(prompt) == 1:
        return TextInput(prompt[0])
    raise ApiError(400, "'prompt' must be a string, a list of one string, or a list of token ids.",
                   param="prompt", code="invalid_value")
