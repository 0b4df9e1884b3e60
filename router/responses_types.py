"""OpenAI Responses API request bodies, as msgspec structs that validate while they decode.

Like the chat route, unknown top-level fields are refused ("Unrecognized request argument
supplied"), as OpenAI does; documented fields that do not change this server's answer are
accepted and ignored. `input` items (and `tools`) are checked one at a time
(`router.responses_input`), because a message item may leave out its `type`, which a tagged union
cannot express, and an error should name the item.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from router.openai_types import JsonObjectFormat, PositiveInt, Probability, Temperature, TextFormat, _Request


class InputText(_Request, kw_only=True, tag="input_text", tag_field="type"):
    text: str


class OutputText(_Request, kw_only=True, tag="output_text", tag_field="type"):
    """An earlier assistant turn's text, sent back as history."""

    text: str
    annotations: list[Any] = []
    logprobs: list[Any] | None = None


class Refusal(_Request, kw_only=True, tag="refusal", tag_field="type"):
    refusal: str


class InputImage(_Request, kw_only=True, tag="input_image", tag_field="type"):
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] = "auto"


Content = InputText | OutputText | Refusal | InputImage


class FunctionCallItem(_Request, kw_only=True):
    """An earlier turn's function call, sent back as history."""

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(_Request, kw_only=True):
    """The result of a function call, for the model to read."""

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText | InputImage]
    id: str | None = None
    status: str | None = None


class FunctionTool(_Request, kw_only=True):
    type: Literal["function"]
    name: str
    parameters: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class NamedFunction(_Request, kw_only=True):
    type: Literal["function"]
    name: str


class TextFormatJsonSchema(_Request, kw_only=True, tag="json_schema", tag_field="type"):
    name: str
    schema: dict[str, Any]
    strict: bool | None = None
    description: str | None = None


class TextConfig(_Request, kw_only=True):
    format: JsonObjectFormat | TextFormat | TextFormatJsonSchema | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class MessageItem(_Request, kw_only=True):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Content]
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class ResponsesRequest(_Request, kw_only=True):
    model: str
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: Probability | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None  # function tools, each checked (`router.responses_input`)
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
