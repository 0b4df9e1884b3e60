"""An Anthropic Messages request as the worker's API-neutral `Generate`: `system` and `messages`
as the conversation (text and image blocks; an assistant's `tool_use` blocks as its calls, a
user's `tool_result` blocks as tool messages), client tools, the tool choice, `thinking` as the
template's `enable_thinking`, `output_config.format` as a constraint, and sampling (`max_tokens`
as a ceiling). What cannot be honoured is refused here, naming where it is.
"""

from __future__ import annotations

import json
from typing import Any


from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import ChatInput, Generate, ResponseFormat, Sampling, Tool, ToolCall, ToolChoice
from mlx_fleet.router.anthropic import types as an
from mlx_fleet.router.http.decoding import checked
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs.conversation import Turn, chat_messages
from mlx_fleet.router.inputs.sampling import build_sampling
from mlx_fleet.router.router_state import RouterState


def _image_url(source: an.Base64Source | an.URLSource) -> str:
    if isinstance(source, an.URLSource):
        return source.url
    return f"data:{source.media_type};base64,{source.data}"


def _result_turn(block: an.ToolResultBlock, name: str | None, where: str) -> Turn:
    turn = Turn("tool", tool_call_id=block.tool_use_id, name=name)
    if isinstance(block.content, str):
        turn.text = block.content
        return turn
    turn.text = "\n".join(part.text for part in block.content if isinstance(part, an.TextBlock))
    turn.images = [(_image_url(part.source), f"{where}.content[{k}].source")
                   for k, part in enumerate(block.content) if isinstance(part, an.ImageBlock)]
    return turn


def _turns(i: int, message: an.MessageParam, names: dict[str, str]) -> list[Turn]:
    """One message as turns: a user's tool results first (one tool turn each), then its own turn."""
    if isinstance(message.content, str):
        return [Turn(message.role, message.content)]
    results, turn, texts = [], Turn(message.role), []
    for j, block in enumerate(message.content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(block, an.TextBlock):
            texts.append(block.text)
        elif isinstance(block, an.ImageBlock):
            turn.images.append((_image_url(block.source), f"{where}.source"))
        elif isinstance(block, an.ToolUseBlock):
            names[block.id] = block.name
            turn.tool_calls += (ToolCall(block.id, block.name, json.dumps(block.input)),)
        elif isinstance(block, an.ToolResultBlock):
            results.append(_result_turn(block, names.get(block.tool_use_id), where))
        # thinking blocks: an earlier turn's reasoning, which chat templates leave out of the prompt
    turn.text = "\n".join(texts)
    keep = turn.text or turn.images or turn.tool_calls or not results
    return [*results, turn] if keep else results


def _tools(req: an.CountTokensRequest) -> tuple[Tool, ...]:
    tools = []
    for i, raw in enumerate(req.tools or ()):
        kind = raw.get("type", "custom") if isinstance(raw, dict) else None
        if kind != "custom":
            raise ApiError(400, f"tools[{i}]: only client tools (with an input_schema) are supported, not "
                                f"'{kind}'.", param=f"tools[{i}].type", code="unsupported_value")
        tool = checked(raw, an.ToolParam, f"tools[{i}]")
        tools.append(Tool(tool.name, tool.description, json.dumps(tool.input_schema)))
    return tuple(tools)


def _tool_choice(req: an.CountTokensRequest, tools: tuple[Tool, ...]) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, an.ToolChoiceAuto):
        return None
    if isinstance(choice, an.ToolChoiceNone):
        return ToolChoice("none")
    if not tools:
        raise ApiError(400, "tool_choice: a forced tool use needs 'tools'.", param="tool_choice",
                       code="invalid_value")
    if isinstance(choice, an.ToolChoiceAny):
        return ToolChoice("required")
    if not any(t.name == choice.name for t in tools):
        raise ApiError(400, f"tool_choice: no tool named '{choice.name}' was given in 'tools'.",
                       param="tool_choice", code="invalid_value")
    return ToolChoice("function", choice.name)


def _template_kwargs(req: an.CountTokensRequest) -> dict[str, Any]:
    if req.thinking is None:
        return {}
    return {"enable_thinking": req.thinking.type != "disabled"}


def _response_format(req: an.CountTokensRequest) -> ResponseFormat | None:
    fmt = req.output_config.format if req.output_config is not None else None
    return None if fmt is None else ResponseFormat("json_schema", json.dumps(fmt.schema), "output", True)


async def messages_generate(req: an.MessagesRequest, model: ModelConfig, router: RouterState) -> Generate:
    chat = await _chat_input(req, model, router)
    # `max_tokens` is a ceiling, shortened to what fits in the context: Claude Code asks for 32k
    # tokens or more whatever the model, and a local model's context is often smaller than that.
    sampling = build_sampling(router.config.server, model, req.max_tokens, ceiling=True, temperature=req.temperature,
                              top_p=req.top_p, top_k=req.top_k, stop=tuple(req.stop_sequences or ()))
    return Generate(chat, sampling, _response_format(req))


async def count_tokens_generate(req: an.CountTokensRequest, model: ModelConfig, router: RouterState) -> Generate:
    """The conversation exactly as a generation would send it; the worker only counts its tokens."""
    return Generate(await _chat_input(req, model, router), Sampling(max_tokens=1))


async def _chat_input(req: an.CountTokensRequest, model: ModelConfig, router: RouterState) -> ChatInput:
    if req.messages[-1].role == "assistant":
        raise ApiError(400, "A final assistant message (a prefilled reply) is not supported: the last message "
                            "must be the user's.", param="messages", code="unsupported_value")
    tools = _tools(req)
    choice = _tool_choice(req, tools)
    turns = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n".join(b.text for b in req.system)
        turns.append(Turn("system", system))
    names: dict[str, str] = {}
    for i, message in enumerate(req.messages):
        turns += _turns(i, message, names)
    messages = await chat_messages(turns, model, router.images, router.config.server.max_images_per_request,
                                   "messages", "messages")
    return ChatInput(messages, tools, choice, _template_kwargs(req))
