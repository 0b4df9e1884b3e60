"""What every generating engine checks before it accepts a request, worded the same for all.

A request whose client gave no length is shortened to what fits in the context; one that still
does not fit, is empty, or names token ids the model does not have, is refused with OpenAI's
wording before any compute is spent on it.
"""

from __future__ import annotations

import msgspec

from mlx_fleet.protocol import ChatInput, Failure, Generate, Sampling, TokensInput


def fit_to_context(sampling: Sampling, prompt_tokens: int, context_length: int) -> Sampling:
    """No limit from the client: generate at most what fits after the prompt."""
    if not sampling.max_tokens_is_default:
        return sampling
    room = context_length - prompt_tokens
    return msgspec.structs.replace(sampling, max_tokens=max(1, min(sampling.max_tokens, room)))


def empty_prompt(param: str) -> Failure:
    """Worded the same wherever it is found: before tokenizing (the vision engine) or after."""
    return Failure("invalid_value", "The prompt is empty.", 400, param)


def check_request(request: Generate, sampling: Sampling, prompt_tokens: int, vocab_size: int,
                  context_length: int) -> Failure | None:
    param = "messages" if isinstance(request.input, ChatInput) else "prompt"
    if prompt_tokens == 0:
        return empty_prompt(param)
    if isinstance(request.input, TokensInput):
        bad = next((t for t in request.input.tokens if not 0 <= t < vocab_size), None)
        if bad is not None:
            return Failure("invalid_value", f"Token id {bad} is out of vocabulary.", 400, "prompt")
    wanted = prompt_tokens + sampling.max_tokens
    if wanted > context_length:
        return Failure(
            "context_length_exceeded",
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{wanted} tokens ({prompt_tokens} in the {param}, {sampling.max_tokens} in the completion). "
            f"Please reduce the length of the {param} or completion.",
            400,
            param,
        )
    return None


def unsupported_by_vision(request: Generate) -> Failure | None:
    """What the vision engine cannot honour is refused, never silently ignored: mlx-vlm's
    tokenizers carry no tool-call format for mlx-lm's parsers to read."""
    if isinstance(request.input, ChatInput) and request.input.tools:
        return Failure("unsupported_parameter", "Tool calling is not supported for vision models yet.", 400, "tools")
    return None
