"""An OpenAI chat request as the worker's API-neutral `Generate`: messages whole (content
parts, assistant tool calls, tool results with their call ids), tools with their JSON schemas,
the tool choice, template arguments, the response-format constraint, sampling and log
probabilities. Image parts are fetched and decoded by `inputs.conversation`, never in a worker.
What can be checked without the model is checked here.
"""

from __future__ import annotations

import json


from mlx_fleet.config import ModelConfig
from mlx_fleet.protocol import ChatInput, Generate, ResponseFormat, Tool, ToolCall, ToolChoice
from mlx_fleet.router.http.errors import ApiError
from mlx_fleet.router.inputs.conversation import Turn, chat_messages
from mlx_fleet.router.openai import types as oa
from mlx_fleet.router.openai.sampling import completion_sampling
from mlx_fleet.router.router_state import RouterState


async def chat_generate(req: oa.ChatCompletionRequest, model: ModelConfig, router: RouterState) -> Generate:
    server = router.config.server
    sampling = completion_sampling(req, req.max_completion_tokens or req.max_tokens, server, model)
    logprobs = _logprobs(req)
    turns = [_turn(i, m) for i, m in enumerate(req.messages)]
    messages = await chat_messages(turns, model, router.images, server.max_images_per_request, "messages",
                                   "chat completions")
    tools = tuple(Tool(t.function.name, t.function.description or "",
                       json.dumps(t.function.parameters) if t.function.parameters is not None else "")
                  for t in req.tools or ())
    chat = ChatInput(messages, tools, _tool_choice(req, tools), _template_kwargs(req))
    return Generate(chat, sampling, _response_format(req), logprobs)


def _turn(i: int, m: oa.ChatMessage) -> Turn:
    turn = Turn("system" if m.role == "developer" else m.role, tool_call_id=m.tool_call_id, name=m.name,
                tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()))
    if isinstance(m.content, list):
        turn.text = "\n".join(p.text for p in m.content if isinstance(p, oa.TextPart))
        turn.images = [(p.image_url.url, f"messages[{i}].content[{j}].image_url.url")
                       for j, p in enumerate(m.content) if isinstance(p, oa.ImagePart)]
    else:
        turn.text = m.content or ""
    return turn


def _tool_choice(req: oa.ChatCompletionRequest, tools: tuple[Tool, ...]) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, oa.NamedToolChoice):
        if not any(t.name == choice.function.name for t in tools):
            raise ApiError(400, f"Invalid value for 'tool_choice': no function named '{choice.function.name}' "
                                "was given in 'tools'.", param="tool_choice", code="invalid_value")
        return ToolChoice("function", choice.function.name)
    if choice == "required" and not tools:
        raise ApiError(400, "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                            "specified.", param="tool_choice", code="invalid_value")
    return ToolChoice(choice)


# Arguments of `apply_chat_template` itself, which the server sets: a client's value would replace
# the conversation, the tools or the template.
_RESERVED_TEMPLATE_ARGS = frozenset({"conversation", "messages", "tools", "documents", "chat_template", "tokenize",
                                     "add_generation_prompt", "continue_final_message", "return_dict",
                                     "return_assistant_tokens_mask", "tokenizer_kwargs"})


def _template_kwargs(req: oa.ChatCompletionRequest) -> dict:
    kwargs = dict(req.chat_template_kwargs or {})
    reserved = sorted(_RESERVED_TEMPLATE_ARGS & kwargs.keys())
    if reserved:
        raise ApiError(400, f"Invalid value for 'chat_template_kwargs': '{reserved[0]}' is set by the server.",
                       param="chat_template_kwargs", code="invalid_value")
    if req.reasoning_effort is not None:
        kwargs.setdefault("reasoning_effort", req.reasoning_effort)
        if req.reasoning_effort == "none":
            kwargs.setdefault("enable_thinking", False)
    return kwargs


def _response_format(req: oa.ChatCompletionRequest) -> ResponseFormat | None:
    fmt = req.response_format
    if fmt is None or isinstance(fmt, oa.TextFormat):
        return None
    if isinstance(fmt, oa.JsonObjectFormat):
        return ResponseFormat("json_object")
    spec = fmt.json_schema
    schema = spec.schema if spec.schema is not None else {"type": "object"}
    return ResponseFormat("json_schema", json.dumps(schema), spec.name, bool(spec.strict))


def _logprobs(req: oa.ChatCompletionRequest) -> int | None:
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError(400, "Invalid value for 'top_logprobs': 'logprobs' must be true to use 'top_logprobs'.",
                       param="top_logprobs", code="invalid_value")
    return (req.top_logprobs or 0) if req.logprobs else None
