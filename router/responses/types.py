"""OpenAI Responses API request bodies, as msgspec structs that validate while they decode, and
the shape of a whole reply (the response object) for the OpenAPI schema.

Like the chat route, unknown top-level fields are refused ("Unrecognized request argument
supplied"), as OpenAI does; documented fields that do not change this server's answer are
accepted and ignored. `input` items (and `tools`) are checked one at a time
(`responses.input`), because a message item may leave out its `type`, which a tagged union
cannot express, and an error should name the item.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from mlx_fleet.router.http.fields import PositiveInt, Probability, StrictRequest, Temperature
from mlx_fleet.router.openai.types import JsonObjectFormat, TextFormat, TokenLogprobOut


class InputText(StrictRequest, kw_only=True, tag="input_text", tag_field="type"):
    text: str


class OutputText(StrictRequest, kw_only=True, tag="output_text", tag_field="type"):
    """An earlier assistant turn's text, sent back as history."""

    text: str
    annotations: list[Any] = []
    logprobs: list[Any] | None = None


class Refusal(StrictRequest, kw_only=True, tag="refusal", tag_field="type"):
    refusal: str


class InputImage(StrictRequest, kw_only=True, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"


Content = InputText | OutputText | Refusal | InputImage


class FunctionCallItem(StrictRequest, kw_only=True):
    """An earlier turn's function call, sent back as history."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(StrictRequest, kw_only=True):
    """The result of a function call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText | InputImage]
    id: str | None = None
    status: str | None = None


class FunctionTool(StrictRequest, kw_only=True):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class NamedFunction(StrictRequest, kw_only=True):
    type: Literal["function"]
    name: str


class TextFormatJsonSchema(StrictRequest, kw_only=True, tag="json_schema", tag_field="type"):
    name: str
    schema: dict[str, Any]
    strict: bool | None = None
    description: str | None = None


class TextConfig(StrictRequest, kw_only=True):
    format: JsonObjectFormat | TextFormat | TextFormatJsonSchema | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class MessageItem(StrictRequest, kw_only=True):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class ResponsesRequest(StrictRequest, kw_only=True):
    model: str
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None  # function tools, each checked (`responses.input`)
    tool_choice: Literal["auto", "none", "required"] | NamedFunction | None = None
    text: TextConfig | None = None
    # Refused when set: this server keeps no state between requests, and has no prompt templates.
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None
    background: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    # Accepted and ignored: they do not change what this server answers.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    service_tier: str | None = None
    include: list[str] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: PositiveInt | None = None
    reasoning: dict[str, Any] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    stream_options: dict[str, Any] | None = None


# -- the response object -------------------------------------------------------------------------
# `responses.events` builds it as JSON directly (the stream's events carry the same object, built
# once per request); these structs describe it exactly (unknown fields refused, so the schema says
# `additionalProperties: false` and schemathesis holds each answer to it).


class _Reply(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ResponseOutputText(_Reply, kw_only=True):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]
    logprobs: list[TokenLogprobOut]


class ResponseOutputMessage(_Reply, kw_only=True, tag="message", tag_field="type"):
    id: str
    role: Literal["assistant"]
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[ResponseOutputText]


class ResponseReasoningText(_Reply, kw_only=True):
    type: Literal["reasoning_text"]
    text: str


class ResponseReasoningItem(_Reply, kw_only=True, tag="reasoning", tag_field="type"):
    id: str
    summary: list[Any]
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[ResponseReasoningText]


class ResponseFunctionCall(_Reply, kw_only=True, tag="function_call", tag_field="type"):
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    call_id: str
    name: str
    arguments: str


class InputTokensDetails(_Reply, kw_only=True):
    cached_tokens: int
    cache_write_tokens: int


class OutputTokensDetails(_Reply, kw_only=True):
    reasoning_tokens: int


class ResponseUsage(_Reply, kw_only=True):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(_Reply, kw_only=True):
    code: str
    message: str


class IncompleteDetails(_Reply, kw_only=True):
    reason: Literal["max_output_tokens"]


class ReasoningSettings(_Reply, kw_only=True):
    effort: str | None
    summary: str | None


class ResponseObject(_Reply, kw_only=True):
    id: str
    object: Literal["response"]
    created_at: int
    model: str
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    output: list[ResponseOutputMessage | ResponseReasoningItem | ResponseFunctionCall]
    instructions: str | None
    max_output_tokens: int | None
    temperature: float
    top_p: float
    parallel_tool_calls: bool
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    text: dict[str, Any]
    truncation: Literal["auto", "disabled"]
    store: bool
    metadata: dict[str, str]
    background: bool
    previous_response_id: None
    reasoning: ReasoningSettings
    user: str | None
    error: ResponseError | None
    incomplete_details: IncompleteDetails | None
    usage: ResponseUsage | None
