"""Anthropic Messages API request bodies, as msgspec structs that validate while they decode, and
the shape of a whole reply (a message) for the OpenAPI schema.

Tolerant where Anthropic's clients need it: unknown fields are ignored (Claude Code sends many:
`metadata`, `cache_control` on blocks, `thinking`, `context_management`, betas...), and earlier
turns' thinking blocks are accepted. Strict where the server cannot do what is asked: a content
block type or image source it cannot read fails decoding, naming where it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from mlx_fleet.router.http.fields import NonNegativeInt, PositiveInt, Probability


class _Tolerant(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class _Block(_Tolerant, kw_only=True, tag_field="type"):
    pass


class TextBlock(_Block, kw_only=True, tag="text"):
    text: str


class Base64Source(_Block, kw_only=True, tag="base64"):
    media_type: str
    data: str


class URLSource(_Block, kw_only=True, tag="url"):
    url: str


class ImageBlock(_Block, kw_only=True, tag="image"):
    source: Base64Source | URLSource


class ThinkingBlock(_Block, kw_only=True, tag="thinking"):
    """An earlier turn's thinking, sent back by clients; it does not go into the prompt."""

    thinking: str = ""


class RedactedThinkingBlock(_Block, kw_only=True, tag="redacted_thinking"):
    data: str = ""


class ToolUseBlock(_Block, kw_only=True, tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(_Block, kw_only=True, tag="tool_result"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] = ""
    is_error: bool = False


Block = TextBlock | ImageBlock | ThinkingBlock | RedactedThinkingBlock | ToolUseBlock | ToolResultBlock


class ToolParam(_Tolerant, kw_only=True):
    """A client tool (Anthropic's server tools, `bash_...`, `web_search_...`, have another `type`)."""

    name: str
    input_schema: dict[str, Any]
    description: str = ""
    type: Literal["custom"] = "custom"


class ToolChoiceAuto(_Block, kw_only=True, tag="auto"):
    disable_parallel_tool_use: bool = False


class ToolChoiceAny(_Block, kw_only=True, tag="any"):
    disable_parallel_tool_use: bool = False


class ToolChoiceTool(_Block, kw_only=True, tag="tool"):
    name: str
    disable_parallel_tool_use: bool = False


class ToolChoiceNone(_Block, kw_only=True, tag="none"):
    pass


ToolChoice = ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone


class JsonOutputFormat(_Tolerant, kw_only=True):
    type: Literal["json_schema"]
    schema: dict[str, Any]


class OutputConfig(_Tolerant, kw_only=True):
    """`effort` is taken and ignored (it is a hint); `format` constrains the answer."""

    format: JsonOutputFormat | None = None


class ThinkingConfig(_Tolerant, kw_only=True):
    """`enabled` / `adaptive` / `disabled`: passed to the chat template as `enable_thinking`."""

    type: str = "enabled"


class MessageParam(_Tolerant, kw_only=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class CountTokensRequest(_Tolerant, kw_only=True):
    """What `/v1/messages/count_tokens` reads: the conversation, without generation settings."""

    model: str
    messages: Annotated[list[MessageParam], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[dict[str, Any]] | None = None  # each checked, to name a server tool it cannot run
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    max_tokens: PositiveInt
    stop_sequences: Annotated[list[str], Meta(max_length=16)] | None = None
    stream: bool = False
    # Sampling settings that older clients send (current Anthropic models no longer take them):
    temperature: Probability | None = None
    top_p: Probability | None = None
    top_k: NonNegativeInt | None = None


# -- a whole reply ---------------------------------------------------------------------------------
# `anthropic.events` builds it as JSON directly; these structs describe it exactly (unknown fields
# refused, so the schema says `additionalProperties: false` and schemathesis holds each answer to it).


class _Reply(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class ReplyText(_Reply, kw_only=True, tag="text", tag_field="type"):
    text: str


class ReplyThinking(_Reply, kw_only=True, tag="thinking", tag_field="type"):
    thinking: str
    signature: str


class ReplyToolUse(_Reply, kw_only=True, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class MessageUsage(_Reply, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int


class AnthropicMessage(_Reply, kw_only=True):
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[ReplyText | ReplyThinking | ReplyToolUse]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]
    stop_sequence: str | None
    usage: MessageUsage
