"""A text completion's prompt as the worker's `TextInput` or `TokensInput`."""

from __future__ import annotations

from mlx_fleet.protocol import TextInput, TokensInput
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.openai import types as oa


def completion_input(req: oa.CompletionRequest) -> TextInput | TokensInput:
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
