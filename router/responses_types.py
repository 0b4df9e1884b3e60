"""OpenAI Responses API request bodies, as msgspec structs that validate while they decode.

Like the chat route, unknown top-level fields are refused ("Unrecognized request argument
supplied"), as OpenAI does; documented fields that do not change this server's answer are
accepted and ignored. `input` items are checked one at a time (`router.responses`), because a
message item may leave out its `type`, which a tagged union cannot express.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta

from router.openai_types import PositiveInt, Probability, Temperature, _Request


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
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    text: dict[str, Any] | None = None
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
