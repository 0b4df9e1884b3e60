"""OpenAI request and response bodies, as msgspec structs that validate while they decode.

Requests reject unknown fields the way OpenAI does ("Unrecognized request argument supplied"),
and accept a documented set of extensions (`top_k`, `min_p`, `repetition_penalty`). Bounds live
in the type annotations (`http.fields`), so the decoder checks them in one pass and
`http.errors.validation_error` words the failures like OpenAI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from mlx_fleet.router.http.fields import (
    INT64,
    NonNegativeInt,
    Penalty,
    PositiveInt,
    Probability,
    StrictRequest,
    Temperature,
)

Stop = str | Annotated[list[str], Meta(max_length=4)] | None


class StreamOptions(StrictRequest, kw_only=True):
    include_usage: bool = False


class ImageURL(StrictRequest, kw_only=True):
    url: str
    detail: Literal["auto", "low", "high"] = "auto"


class TextPart(StrictRequest, kw_only=True, tag="text", tag_field="type"):
    text: str


class ImagePart(StrictRequest, kw_only=True, tag="image_url", tag_field="type"):
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(StrictRequest, kw_only=True):
    name: str
    arguments: str


class ToolCall(StrictRequest, kw_only=True):
    """An assistant's call, in a request's history and in a response alike."""

    id: str
    type: Literal["function"]
    function: FunctionCall


class ChatMessage(StrictRequest, kw_only=True):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # a thinking model's earlier turn, as clients echo it back


class FunctionDef(StrictRequest, kw_only=True):
    name: Annotated[str, Meta(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(StrictRequest, kw_only=True):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(StrictRequest, kw_only=True):
    name: str


class NamedToolChoice(StrictRequest, kw_only=True):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(StrictRequest, kw_only=True):
    name: str
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class TextFormat(StrictRequest, kw_only=True, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(StrictRequest, kw_only=True, tag="json_object", tag_field="type"):
    pass


class JsonSchemaResponseFormat(StrictRequest, kw_only=True, tag="json_schema", tag_field="type"):
    json_schema: JsonSchemaFormat


ResponseFormatIn = TextFormat | JsonObjectFormat | JsonSchemaResponseFormat


class SamplingFields(StrictRequest, kw_only=True):
    """Fields shared by chat and text completions."""

    model: str
    max_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    n: PositiveInt = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Stop = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Annotated[int, Meta(ge=-INT64 - 1, le=INT64)] | None = None
    # Documented fields that do not change the result: accepted and ignored.
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    # Extensions that mlx-lm's samplers support and OpenAI's API does not have:
    top_k: NonNegativeInt | None = None
    min_p: Probability | None = None
    repetition_penalty: Annotated[float, Meta(gt=0)] | None = None


class ChatCompletionRequest(SamplingFields, kw_only=True):
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    response_format: ResponseFormatIn | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None


class CompletionRequest(SamplingFields, kw_only=True):
    # A string, one string in a list, or token ids (msgspec cannot tell two list types apart in a union).
    prompt: str | Annotated[list[int | str], Meta(min_length=1)]
    echo: bool = False
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    suffix: str | None = None


# -- responses -------------------------------------------------------------------------------


class _Response(msgspec.Struct, kw_only=True):
    pass


class PromptTokensDetails(_Response, kw_only=True):
    cached_tokens: int


class Usage(_Response, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class AssistantMessage(_Response, kw_only=True, omit_defaults=True):
    """Thinking and tool calls appear only when there are some (`role` has no default, so it stays)."""

    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class TopLogprob(_Response, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobOut(_Response, kw_only=True):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChatLogprobs(_Response, kw_only=True):
    content: list[TokenLogprobOut]
    refusal: None = None


class CompletionLogprobs(_Response, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class ChatChoice(_Response, kw_only=True):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: ChatLogprobs | None = None


class ChatCompletion(_Response, kw_only=True):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionChoice(_Response, kw_only=True):
    index: int = 0
    text: str
    finish_reason: str
    logprobs: CompletionLogprobs | None = None


class Completion(_Response, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(_Response, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mlx-fleet"
    type: str = "text"
    context_length: int | None = None  # from the model's files (as vLLM's max_model_len); null if they say none


class ModelList(_Response, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelCard]
