"""A chat request rendered through the model's own chat template, messages whole: assistant tool
calls, tool results with their call ids, the offered tools and the client's template arguments
all reach the template as the model's authors wrote it to expect them (OpenAI's shapes, which
Hugging Face templates follow).
"""

from __future__ import annotations

import json
from typing import Any

from mlx_fleet.protocol import ChatInput, Failure, Message, Tool


class TemplateRefused(Exception):
    """The template raised (Gemma's refuses a system message): the client's conversation is at
    fault, so it becomes a 400 that quotes the template, and the worker carries on."""

    def failure(self) -> Failure:
        return Failure("invalid_value", f"The model's chat template refused this conversation: {self}",
                       400, "messages")


def template_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                                     for c in m.tool_calls]
        if m.tool_call_id is not None:
            message["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            message["name"] = m.name
        out.append(message)
    return out


def template_tools(tools: tuple[Tool, ...]) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                              "parameters": json.loads(t.parameters_json or "{}")}}
            for t in tools]


def offered_tools(chat: ChatInput) -> tuple[Tool, ...]:
    """The tools the model sees: none under `tool_choice: none`; only the named one when forced."""
    choice = chat.tool_choice
    if choice is None or choice.mode in ("auto", "required"):
        return chat.tools
    if choice.mode == "none":
        return ()
    return tuple(t for t in chat.tools if t.name == choice.name)


def render(tokenizer: Any, chat: ChatInput, tools: list[dict[str, Any]] | None) -> str:
    try:
        return tokenizer.apply_chat_template(template_messages(chat.messages), tools=tools,
                                             add_generation_prompt=True, tokenize=False, **chat.template_kwargs)
    except Exception as e:  # noqa: BLE001 - jinja's TemplateError, or whatever a template's own code raises
        raise TemplateRefused(str(e) or type(e).__name__) from None


def _arguments(text: str) -> Any:
    """Templates expect arguments as an object (they `tojson` it), as mlx-lm's server gives them."""
    try:
        return json.loads(text)
    except ValueError:
        return text
