"""A Responses API request as the worker's API-neutral `Generate`: `instructions` and `input`
items as the conversation (messages, earlier function calls and their outputs), function tools,
the tool choice, the `text.format` constraint, sampling and log probabilities. What this
stateless server cannot honour is refused here, naming the parameter.
"""

from __future__ import annotations

import json
from typing import Any


from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import ChatInput, Generate, ResponseFormat, Tool, ToolCall, ToolChoice
from mlx_fleet.router.http.decoding import checked
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs.conversation import Turn, chat_messages
from mlx_fleet.router.inputs.sampling import build_sampling
from mlx_fleet.router.responses import types as rt
from mlx_fleet.router.router_state import RouterState

_ROLES = {"developer": "system"}
LOGPROBS = "message.output_text.logprobs"  # the `include` value that asks for them
_ITEMS: dict[str, type] = {"message": rt.MessageItem, "function_call": rt.FunctionCallItem,
                           "function_call_output": rt.FunctionCallOutputItem}


def refuse_what_cannot_be_honoured(req: rt.ResponsesRequest) -> None:
    if req.previous_response_id is not None or req.conversation is not None:
        param = "previous_response_id" if req.previous_response_id is not None else "conversation"
        raise ApiError(400, "This server keeps no responses or conversations: send the whole conversation in "
                            "'input' (and 'store': false).", param=param, code="unsupported_parameter")
    if req.prompt is not None:
        raise ApiError(400, "Stored prompt templates are not supported.", param="prompt", code="unsupported_parameter")
    if req.background:
        raise ApiError(400, "Background responses are not supported.", param="background",
                       code="unsupported_parameter")


def _item(i: int, raw: Any) -> Any:
    """One `input` item, or None for one that is not part of the prompt."""
    kind = raw.get("type", "message") if isinstance(raw, dict) else None
    if kind == "reasoning":
        return None  # an earlier turn's reasoning, sent back by clients; templates leave it out
    if kind not in _ITEMS:
        what = f"Input items of type '{kind}' are not supported." if isinstance(kind, str) else \
            "An input item must be an object."
        raise ApiError(400, what, param=f"input[{i}]", code="unsupported_value")
    return checked(raw, _ITEMS[kind], f"input[{i}]")


def _content(turn: Turn, parts: str | list, param: str) -> None:
    if isinstance(parts, str):
        turn.text = parts
        return
    texts = []
    for j, part in enumerate(parts):
        if isinstance(part, rt.InputImage):
            if part.image_url is None:
                raise ApiError(400, "Images must be given by 'image_url' (uploaded files are not supported).",
                               param=f"{param}[{j}]", code="unsupported_value")
            turn.images.append((part.image_url, f"{param}[{j}].image_url"))
        else:
            texts.append(part.refusal if isinstance(part, rt.Refusal) else part.text)
    turn.text = "\n".join(texts)


def _turns(req: rt.ResponsesRequest) -> list[Turn]:
    """Messages as turns; function calls join the assistant turn they follow (or open one), and
    each output becomes a tool turn that names its call."""
    turns = [Turn("system", req.instructions)] if req.instructions else []
    if isinstance(req.input, str):
        return [*turns, Turn("user", req.input)]
    names: dict[str, str] = {}
    for i, raw in enumerate(req.input):
        item = _item(i, raw)
        if isinstance(item, rt.MessageItem):
            turn = Turn(_ROLES.get(item.role, item.role))
            _content(turn, item.content, f"input[{i}].content")
            turns.append(turn)
        elif isinstance(item, rt.FunctionCallItem):
            names[item.call_id] = item.name
            if not turns or turns[-1].role != "assistant":
                turns.append(Turn("assistant"))
            turns[-1].tool_calls += (ToolCall(item.call_id, item.name, item.arguments),)
        elif isinstance(item, rt.FunctionCallOutputItem):
            turn = Turn("tool", tool_call_id=item.call_id, name=names.get(item.call_id))
            _content(turn, item.output, f"input[{i}].output")
            turns.append(turn)
    if not turns:
        raise ApiError(400, "'input' is empty.", param="input", code="empty_array")
    return turns


def _tools(req: rt.ResponsesRequest) -> tuple[Tool, ...]:
    tools = []
    for i, raw in enumerate(req.tools or ()):
        if not isinstance(raw, dict) or raw.get("type") != "function":
            raise ApiError(400, "Only function tools are supported.", param=f"tools[{i}].type",
                           code="unsupported_value")
        tool = checked(raw, rt.FunctionTool, f"tools[{i}]")
        tools.append(Tool(tool.name, tool.description or "",
                          json.dumps(tool.parameters) if tool.parameters is not None else ""))
    return tuple(tools)


def _tool_choice(req: rt.ResponsesRequest, tools: tuple[Tool, ...]) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, rt.NamedFunction):
        if not any(t.name == choice.name for t in tools):
            raise ApiError(400, f"Invalid value for 'tool_choice': no function named '{choice.name}' was given "
                                "in 'tools'.", param="tool_choice", code="invalid_value")
        return ToolChoice("function", choice.name)
    if choice == "required" and not tools:
        raise ApiError(400, "Invalid value for 'tool_choice': 'required' needs 'tools'.", param="tool_choice",
                       code="invalid_value")
    return ToolChoice(choice)


def _format(req: rt.ResponsesRequest) -> ResponseFormat | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or isinstance(fmt, rt.TextFormat):
        return None
    if isinstance(fmt, rt.JsonObjectFormat):
        return ResponseFormat("json_object")
    return ResponseFormat("json_schema", json.dumps(fmt.schema), fmt.name, bool(fmt.strict))


async def responses_generate(req: rt.ResponsesRequest, model: ModelConfig, router: RouterState) -> Generate:
    refuse_what_cannot_be_honoured(req)
    server = router.config.server
    tools = _tools(req)
    choice = _tool_choice(req, tools)
    messages = await chat_messages(_turns(req), model, router.images, server.max_images_per_request, "input",
                                   "responses")
    chat = ChatInput(messages, tools, choice, _template_kwargs(req))
    sampling = build_sampling(server, model, req.max_output_tokens, temperature=req.temperature, top_p=req.top_p)
    return Generate(chat, sampling, _format(req), _logprobs(req))


def _logprobs(req: rt.ResponsesRequest) -> int | None:
    """How many alternatives each answer token's log probability comes with, or None for none:
    asked by `include` (OpenAI's way) or by `top_logprobs` alone."""
    if LOGPROBS in (req.include or ()) or req.top_logprobs:
        return req.top_logprobs or 0
    return None


def _template_kwargs(req: rt.ResponsesRequest) -> dict[str, Any]:
    """`reasoning.effort` reaches the chat template as chat's `reasoning_effort` does."""
    effort = (req.reasoning or {}).get("effort")
    if effort is None:
        return {}
    return {"reasoning_effort": effort, **({"enable_thinking": False} if effort == "none" else {})}
